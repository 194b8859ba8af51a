"""`python -m gatewayd` is the same as the `gatewayd` console script."""

from gatewayd.early import hold_reloads

hold_reloads()  # before the slow imports: a SIGHUP now must not end the process

from gatewayd.cli import main  # noqa: E402

main()
