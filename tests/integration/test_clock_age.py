"""Age eviction judges age on a clock a step cannot move: nothing is evicted by a wall-clock step.

A +2 h step during an outage evicted a whole backlog (66 of 66) before the jump was even seen.
The queue now asks the clock guard for the time to judge age by: None while the wall clock is
not trusted (no age eviction at all), else the wall time at the start carried on by the
monotonic clock; a row is old when both its time and its time in the queue say so. Real SQLite file; the wall clock is a stand-in the test steps.
"""

from __future__ import annotations

import time
from pathlib import Path

from gatewayd.acquire.clock import ClockGuard
from gatewayd.config import ClockConfig, QueueConfig
from gatewayd.model import Sample
from gatewayd.queue.stats import read_stats
from gatewayd.queue.writer import SampleQueue

HOUR_MS = 3_600_000


async def test_a_forward_step_evicts_nothing_by_age(tmp_path: Path) -> None:
    step = {"ms": 0}
    guard = ClockGuard(ClockConfig(), wall_ms=lambda: time.time_ns() // 1_000_000 + step["ms"])
    path = tmp_path / "queue.db"
    queue = SampleQueue(
        QueueConfig(path=path, max_age_s=3600),
        age_clock=guard.age_now_ms,
        enqueue_clock=guard.queue_now_ms,
    )
    await queue.open()
    try:
        for n in range(66):  # the backlog of an outage
            queue.put(Sample("subPK", "d1", guard.stamp()[0] + n, {"P": float(n)}))
        await queue.flush()
        step["ms"] = 2 * HOUR_MS  # stepped forward, not yet noticed by the guard
        for phase in ("before the check", "untrusted", "trusted again"):
            queue.put(Sample("subPK", "d1", guard.stamp()[0], {"P": -1.0}))
            await queue.flush()
            assert queue.evicted == 0, phase
            guard.check()
    finally:
        await queue.close()
    stats = read_stats(path)
    assert stats.pending_samples == 69 and stats.state["evicted"] == 0


async def test_a_restart_on_a_stepped_clock_evicts_nothing_by_age(tmp_path: Path) -> None:
    """Found by the long chaos round: killed and restarted while the wall clock read +50 y."""
    path = tmp_path / "queue.db"
    step = {"ms": 0}
    for run in range(2):
        guard = ClockGuard(ClockConfig(), wall_ms=lambda: time.time_ns() // 1_000_000 + step["ms"])
        queue = SampleQueue(
            QueueConfig(path=path, max_age_s=3600),
            age_clock=guard.age_now_ms,
            enqueue_clock=guard.queue_now_ms,
            resume_clock=guard.resume_queue_clock,
        )
        await queue.open()
        for n in range(30):
            queue.put(Sample("subPK", "d1", guard.stamp()[0] + n, {"P": float(run)}))
        await queue.flush()
        queue.put(Sample("subPK", "d1", guard.stamp()[0], {"P": -1.0}))
        await queue.flush()
        await queue.close()
        step["ms"] = 50 * 365 * 24 * HOUR_MS  # the box restarts with the clock 50 years ahead
    stats = read_stats(path)
    assert stats.state["evicted"] == 0 and stats.pending_samples == 62
