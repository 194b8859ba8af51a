"""Log lines for people and journald: one event per line, `key=value` fields.

Under systemd (`JOURNAL_STREAM` is set) the timestamp is left out because journald adds its own.
Chatty libraries are held to warnings: on flash storage a log flood is a fault of its own.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

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


class RepeatLimiter(logging.Filter):
    """At most `burst` records of one message template per logger in each `window_s`.

    The next record of that template that passes says how many were held back
    (`suppressed=N`), so a flapping device or a garbage-spewing peer cannot flood the journal.
    """

    def __init__(
        self, burst: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], list[float]] = {}  # [window start, count, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            start, count, suppressed = self._seen.get(key, [now, 0, 0])
            if now - start >= self.window_s:
                start, count = now, 0
            count += 1
            if count > self.burst:
                self._seen[key] = [start, count, suppressed + 1]
                return False
            self._seen[key] = [start, count, 0]
        if suppressed:
            record.msg = f"{record.msg} suppressed={int(suppressed)}"
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(with_time="JOURNAL_STREAM" not in os.environ))
    handler.addFilter(RepeatLimiter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # pymodbus writes its own error line (and, on some paths, multi-line frame dumps) for every
    # failed request, other devices' traffic included. The poller logs one line when a device
    # goes down or a read starts being refused, and one when it recovers: that is what an
    # operator reads, so the library's own lines are kept out of the journal entirely.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL + 1)
    # apscheduler warns on every skipped run of an overrunning poll; the poller counts those.
    # Poll jobs never raise (the poller logs its own errors), so the executor has nothing to add.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    logging.getLogger("apscheduler.executors").setLevel(logging.CRITICAL)
