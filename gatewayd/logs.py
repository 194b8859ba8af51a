"""Log lines for people and journald: one event per line, `key=value` fields.

Under systemd (`JOURNAL_STREAM` is set) the timestamp is left out because journald adds its own.
Chatty libraries are held to warnings: on flash storage a log flood is a fault of its own.
"""

from __future__ import annotations

import logging
import os
import sys

_QUIET = ("pymodbus", "apscheduler", "amqtt", "transitions", "asyncio")


class KeyValueFormatter(logging.Formatter):
    """`2026-11-25T10:00:00Z level=info logger=gatewayd.forwarder event k=v …`"""

    def __init__(self, with_time: bool) -> None:
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        head = f"level={record.levelname.lower()} logger={record.name} "
        if self.with_time:
            stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
            head = f"{stamp}.{int(record.msecs):03d} " + head
        line = head + record.getMessage()
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(with_time="JOURNAL_STREAM" not in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # pymodbus warns on every failed connect; the poller logs a device going down once.
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    # apscheduler warns on every skipped run of an overrunning poll; the poller counts those.
    # Poll jobs never raise (the poller logs its own errors), so the executor has nothing to add.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    logging.getLogger("apscheduler.executors").setLevel(logging.CRITICAL)
