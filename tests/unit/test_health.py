"""The health tick against a real queue file and small stand-ins of the other stages."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from gatewayd.config import QueueConfig
from gatewayd.model import Sample
from gatewayd.queue.store import SampleQueue, read_stats
from gatewayd.runtime.health import Health
from gatewayd.runtime.snapshots import eta_now


class Uplink:
    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.dropped_replies = 0
        self.stalls = 0
        self.refused = ""
        self.refusals = 0
        self.status_since_ms = 1_800_000_000_000

    @property
    def status(self) -> str:
        return "connected" if self.connected.is_set() else "disconnected"


class Sender:
    def __init__(self) -> None:
        self.delivered = 0
        self.rejected = 0
        self.inflight = 0
        self.replies: dict[str, int] = {}
        self.storms = 0


class Hub:
    def __init__(self) -> None:
        self.parked: dict[Any, float] = {}


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[SampleQueue]:
    q = SampleQueue(QueueConfig(path=tmp_path / "q.db", commit_interval_ms=10))
    await q.open()
    try:
        yield q
    finally:
        await q.close()


def health_for(queue: SampleQueue, uplink: Uplink, sender: Sender) -> Health:
    return Health(queue, cast(Any, uplink), cast(Any, sender), cast(Any, Hub()), tick_s=0.2)


async def test_a_tick_publishes_a_snapshot_and_writes_the_state_table(
    queue: SampleQueue,
) -> None:
    uplink, sender = Uplink(), Sender()
    health = health_for(queue, uplink, sender)
    for i in range(3):
        queue.put(Sample("pk", "dk", time.time_ns() // 1_000_000 + i, {"P": i, "Q": i}))
    await queue.flush()
    uplink.connected.set()
    sender.replies["200"] = 2
    before = health.snapshot
    await health.tick()
    s = health.snapshot
    assert s is not before and s.writer_ok
    assert (s.queue.pending, s.queue.points_per_sample, s.connected) == (3, 2.0, True)
    assert s.forwarder.replies == (("200", 2),)
    sender.replies["1204"] = 1  # the live dict changes; the published snapshot does not
    assert s.forwarder.replies == (("200", 2),)
    assert health.refresh().forwarder.replies == (("1204", 1), ("200", 2))
    assert health.status_line() == "pending=3 uplink=connected sent_per_s=0"
    state = read_stats(queue.path).state
    assert state["uplink"] == "connected" and state["inflight_requests"] == 0
    assert state["uplink_since_ms"] == uplink.status_since_ms  # the session's, not the tick's


async def test_a_stuck_writer_thread_stops_its_pulse_but_not_the_tick(
    queue: SampleQueue,
) -> None:
    health = health_for(queue, Uplink(), Sender())
    await health.tick()
    writer_beat = health.writer_pulse._last
    entered, release = threading.Event(), threading.Event()

    def hang() -> None:
        entered.set()
        release.wait()

    stuck = asyncio.ensure_future(queue._run(hang))  # the writer thread hangs
    await asyncio.to_thread(entered.wait, 5)
    try:
        async with asyncio.timeout(5):
            await health.tick()  # waits its bound (1 s) for the figures, then gives up
        assert not health.writer_ok and not health.snapshot.writer_ok
        assert health.writer_pulse._last == writer_beat
        assert health.pulse._last > writer_beat  # the tick itself still runs
    finally:
        release.set()
        await stuck
    await health.tick()
    assert health.writer_ok and health.writer_pulse._last > writer_beat


async def test_the_drain_rate_leaves_out_the_wait_before_the_first_delivery(
    queue: SampleQueue,
) -> None:
    """After a start nothing is delivered until the session is up (5 round trips); counted in
    the rate's window, that wait read as a slow drain (issue 18: ETA within 20 %)."""
    health = health_for(queue, Uplink(), Sender())
    delivered, pending = 0, 10_000
    rate = shrink = 0.0
    for tick in range(1, 11):  # every 2 s: 10 s of nothing, then 100 samples/s
        now = 1000.0 + 2 * tick
        if tick > 5:
            delivered, pending = delivered + 200, pending - 200
        rate, shrink = health._rates(now, delivered, pending, 2.0)
    assert rate == pytest.approx(100, rel=0.01)
    assert shrink == pytest.approx(100, rel=0.01)


async def test_the_eta_counts_down_from_the_tick_to_the_scrape(queue: SampleQueue) -> None:
    """The queue's depth is a tick's (every 2 s): an ETA worked out from it at a scrape a
    second later read a second long, 1.5x the truth with 4 s of a drain left (issue 18)."""
    health = health_for(queue, Uplink(), Sender())
    for i in range(3):
        queue.put(Sample("pk", "dk", time.time_ns() // 1_000_000 + i, {"P": i}))
    await queue.flush()
    health._history.append((time.monotonic() - 2.0, 0, 9))  # 6 samples gone in 2 s: 3/s
    await health.tick()
    s = health.snapshot
    assert s.eta_s == pytest.approx(1.0, rel=0.05)  # 3 left at 3 a second
    assert eta_now(s, s.taken_s + 0.4) == pytest.approx(0.6, rel=0.05)
    assert eta_now(s, s.taken_s + 5.0) == 0.0
    assert eta_now(replace(s, eta_s=None), s.taken_s) == float("inf")
