"""The log limiter holds back repeats per device, never a device's own first lines, and says
what it held back (issue 15: 12 devices down in a minute, only 5 named, no marker)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gatewayd.logs import RepeatLimiter, clip, report_held_back


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def clock() -> list[float]:
    return [0.0]


@pytest.fixture
def lines(clock: list[float]) -> Iterator[Lines]:
    handler = Lines()
    handler.addFilter(RepeatLimiter(burst=5, window_s=60, clock=lambda: clock[0]))
    logger = logging.getLogger("gatewayd.test_limiter")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


log = logging.getLogger("gatewayd.test_limiter")


def test_every_device_down_in_the_same_minute_is_named(lines: Lines) -> None:
    for n in range(12):
        log.warning("device_down device=%s endpoint=%s reason=%r", f"m{n}", "tcp:x", "timeout")
    for n in range(12):
        log.warning("sub_device_parked device=%s/%s reason=%r", "pk", f"d{n}", "1212")
    named = {line.split()[1] for line in lines.lines}
    assert {f"device=m{n}" for n in range(12)} <= named
    assert {f"device=pk/d{n}" for n in range(12)} <= named


def test_one_device_flapping_is_limited_and_the_limit_is_announced(
    lines: Lines, clock: list[float]
) -> None:
    for _ in range(20):
        log.warning("device_down device=%s reason=%r", "m1", "timeout")
    downs = [line for line in lines.lines if line.startswith("device_down")]
    assert len(downs) == 5
    held = [line for line in lines.lines if line.startswith("log_limited")]
    assert len(held) == 1 and "device_down" in held[0] and "m1" in held[0]
    log.warning("device_down device=%s reason=%r", "m2", "timeout")  # another device: logged
    assert lines.lines[-1].startswith("device_down device=m2")
    clock[0] = 61.0
    log.info("anything_else")
    summary = [line for line in lines.lines if line.startswith("log_held_back")]
    assert len(summary) == 1 and "count=15" in summary[0] and "m1" in summary[0]


def test_hub_text_is_cut_to_a_sane_length() -> None:
    message = "x" * 54_000  # a hub message as long as the longest seen
    cut = clip(message)
    assert len(cut) < 400 and cut.endswith("[53700 more characters]")
    assert clip("short") == "short"


def test_held_back_counts_are_reported_without_a_later_line_and_at_a_stop(
    lines: Lines, clock: list[float]
) -> None:
    """Before: a count waited for some later line to be logged, and was lost at a stop (an
    operator test: 13 dead letters held back, never counted in the journal)."""
    logging.getLogger().addHandler(lines)  # as setup_logging installs it (restored after)
    for _ in range(8):
        log.warning("sample_rejected device=%s code=%d", "pk/d1", 1204)
    for _ in range(7):
        log.warning("hub_refuses_everything code=%d", 1220)
    clock[0] = 61.0
    report_held_back()  # the health tick: both windows are over
    held = [line for line in lines.lines if line.startswith("log_held_back")]
    assert held == [
        "log_held_back event=sample_rejected device=pk/d1 count=3",
        "log_held_back event=hub_refuses_everything device=- count=2",
    ]
    for _ in range(9):
        log.warning("sample_rejected device=%s code=%d", "pk/d1", 1204)
    clock[0] = 70.0  # the window is not over, but the process stops
    report_held_back(everything=True)
    assert lines.lines[-1] == "log_held_back event=sample_rejected device=pk/d1 count=4"
