"""`python -m gatewayd` is the same as the `gatewayd` console script."""

from gatewayd.cli import main

main()
