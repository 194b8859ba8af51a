from __future__ import annotations

import logging

from gatewayd.logs import KeyValueFormatter, RepeatLimiter


def record(msg: str, name: str = "gatewayd.x") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)


def test_repeats_are_limited_per_template_and_counted() -> None:
    now = [0.0]
    limiter = RepeatLimiter(burst=3, window_s=60, clock=lambda: now[0])
    passed = [limiter.filter(record("reply_dropped topic=%s")) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert limiter.filter(record("device_down device=%s"))  # another template is independent
    now[0] = 61.0
    later = record("reply_dropped topic=%s")
    assert limiter.filter(later) and later.msg.endswith("suppressed=7")


def test_journal_lines_have_no_timestamp() -> None:
    line = KeyValueFormatter(with_time=False).format(record("event k=%s"))
    assert line.startswith("level=warning logger=gatewayd.x event")
    assert KeyValueFormatter(with_time=True).format(record("e"))[:2] == "20"
