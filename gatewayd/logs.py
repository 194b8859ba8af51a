"""Log lines for people and journald: one event per line, `key=value` fields.

Under systemd (`JOURNAL_STREAM` is set) the timestamp is left out because journald adds its own.
Chatty libraries are held to warnings: on flash storage a log flood is a fault of its own.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable

_QUIET = ("pymodbus", "amqtt", "transitions", "asyncio", "tzlocal")


#: Text copied from the hub into a log line is cut to this many characters.
HUB_TEXT_MAX = 300


def clip(text: str, limit: int = HUB_TEXT_MAX) -> str:
    """Foreign text for a log line: long messages (54 KB were seen) are cut, and say so."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


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


#: `device=%s` (or `device=%s/%s`, product/device keys) in a template names the device.
_DEVICE_FIELD = re.compile(r"\bdevice=(%s(?:/%s)?)")
_PLACEHOLDER = re.compile(r"%[^%]")


def device_of(record: logging.LogRecord) -> str:
    """The device a record is about, from its `device=` field; "" if it names none."""
    msg = str(record.msg)
    match = _DEVICE_FIELD.search(msg)
    if match is None or not isinstance(record.args, tuple):
        return ""
    index = len(_PLACEHOLDER.findall(msg[: match.start(1)].replace("%%", "")))
    width = match.group(1).count("%")
    return "/".join(str(arg) for arg in record.args[index : index + width])


class RepeatLimiter(logging.Filter):
    """At most `burst` records of one message template per logger *and device* in `window_s`.

    A flapping device or a garbage-spewing peer cannot flood the journal, and one noisy device
    cannot hide another: a record naming a device (`device=...`) is counted for that device
    only, so twelve devices going down in the same minute are all named. When a limit starts
    to hold lines back, one `log_limited` line says so at once; once the window is over, a
    `log_held_back` line (or `suppressed=N` on the next record of that kind) gives the count.
    """

    def __init__(
        self, burst: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        # (logger, template, device) -> [window start, count, suppressed]
        self._seen: dict[tuple[str, str, str], list[float]] = {}
        self._last_sweep = clock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg), device_of(record))
        now = self.clock()
        with self._lock:
            overdue = self._sweep(now, key)
            start, count, suppressed = self._seen.get(key, [now, 0, 0])
            if now - start >= self.window_s:
                start, count = now, 0
            count += 1
            if count > self.burst:
                self._seen[key] = [start, count, suppressed + 1]
                passed, announce = False, count == self.burst + 1
            else:
                self._seen[key] = [start, count, 0]
                passed, announce = True, False
        _report(overdue)
        if announce:
            logging.getLogger(record.name).warning(
                "log_limited event=%s device=%s burst=%d window_s=%g"
                " note='holding back more lines like this; their count follows'",
                _event(str(record.msg)),
                key[2] or "-",
                self.burst,
                self.window_s,
            )
        if passed and suppressed:
            record.msg = f"{record.msg} suppressed={int(suppressed)}"
        return passed

    def report_held(self, everything: bool = False) -> None:
        """Log the counts of windows that are over (with `everything`, of all windows: at a stop).

        Called by the health tick and at a stop, so a count never waits for an unrelated line
        to be logged, and none is lost when the process ends."""
        now = self.clock()
        with self._lock:
            self._last_sweep = now
            overdue = self._overdue(now, None, everything)
        _report(overdue)

    def _sweep(self, now: float, current: tuple[str, str, str]) -> list[tuple[str, str, str, int]]:
        """Windows that ended with lines held back: report them (at most once a second)."""
        if now - self._last_sweep < 1.0:
            return []
        self._last_sweep = now
        return self._overdue(now, current, False)

    def _overdue(
        self, now: float, current: tuple[str, str, str] | None, everything: bool
    ) -> list[tuple[str, str, str, int]]:
        overdue = []
        for key, (start, _count, suppressed) in list(self._seen.items()):
            # The current record's key says its count itself (suppressed=N).
            if (everything or now - start >= self.window_s) and key != current:
                if suppressed:
                    overdue.append((*key, int(suppressed)))
                del self._seen[key]
        return overdue


def _report(overdue: list[tuple[str, str, str, int]]) -> None:
    for name, template, device, held in overdue:
        logging.getLogger(name).warning(
            "log_held_back event=%s device=%s count=%d", _event(template), device or "-", held
        )


def report_held_back(everything: bool = False) -> None:
    """Every limiter of the root logger's handlers reports what it held back (see report_held)."""
    for handler in logging.getLogger().handlers:
        for limiter in handler.filters:
            if isinstance(limiter, RepeatLimiter):
                limiter.report_held(everything)


def _event(template: str) -> str:
    return template.split(" ", 1)[0]


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
