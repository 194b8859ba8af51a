"""`python -m gatewayd` is the same as the `gatewayd` console script."""

from gatewayd.early import hold_collections, hold_reloads

hold_reloads()  # before the slow imports: a SIGHUP now must not end the process
hold_collections()  # until READY, or until a command other than `run` starts (cli.main)

from gatewayd.cli import main  # noqa: E402

main()
