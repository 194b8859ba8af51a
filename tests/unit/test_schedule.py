"""PollSchedule (gatewayd/acquire/schedule.py): one timer per interval, on a real event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gatewayd.acquire.schedule import PollSchedule


def recorder(
    stamps: dict[str, list[float]], name: str, busy_s: float = 0.0
) -> Callable[[], Awaitable[None]]:
    async def poll() -> None:
        stamps.setdefault(name, []).append(asyncio.get_running_loop().time())
        if busy_s:
            await asyncio.sleep(busy_s)

    return poll


async def test_devices_sharing_an_interval_share_one_timer_and_keep_their_rate() -> None:
    stamps: dict[str, list[float]] = {}
    jobs = [(f"a{i}", 0.1, recorder(stamps, f"a{i}")) for i in range(20)]
    jobs += [(f"b{i}", 0.25, recorder(stamps, f"b{i}")) for i in range(5)]
    schedule = PollSchedule(jobs)
    started = asyncio.get_running_loop().time()
    schedule.start()
    timers = [t for t in asyncio.all_tasks() if t.get_name().startswith("polls-every-")]
    assert len(timers) == 2  # one per interval, not one per device
    await asyncio.sleep(1.02)
    schedule.shutdown()
    for i in range(20):
        assert 9 <= len(stamps[f"a{i}"]) <= 11
        gaps = [b - a for a, b in zip(stamps[f"a{i}"], stamps[f"a{i}"][1:], strict=False)]
        assert all(0.05 <= g <= 0.15 for g in gaps), gaps
    for i in range(5):
        assert 4 <= len(stamps[f"b{i}"]) <= 5
    # The first polls are spread over the first interval, not all at once.
    firsts = sorted(stamps[f"a{i}"][0] - started for i in range(20))
    assert firsts[0] < 0.02 and 0.07 <= firsts[-1] < 0.1


async def test_a_poll_still_running_skips_its_next_runs_and_they_are_counted() -> None:
    stamps: dict[str, list[float]] = {}
    skipped: list[str] = []
    schedule = PollSchedule(
        [("slow", 0.05, recorder(stamps, "slow", busy_s=0.12))], on_overrun=skipped.append
    )
    schedule.start()
    await asyncio.sleep(0.5)
    schedule.shutdown()
    assert skipped.count("slow") >= 4
    gaps = [b - a for a, b in zip(stamps["slow"], stamps["slow"][1:], strict=False)]
    assert all(g >= 0.12 for g in gaps)  # never two at once


async def test_runs_missed_while_the_loop_was_blocked_are_not_made_up() -> None:
    stamps: dict[str, list[float]] = {}
    jobs = [(f"d{i}", 0.05, recorder(stamps, f"d{i}")) for i in range(4)]
    schedule = PollSchedule(jobs)
    schedule.start()
    await asyncio.sleep(0.12)
    before = {name: len(s) for name, s in stamps.items()}
    time.sleep(0.5)  # noqa: ASYNC251 (the process could not run for ten intervals)
    await asyncio.sleep(0.12)
    schedule.shutdown()
    for name, count in before.items():
        # Made up, it would be ~10 more; not made up, about two intervals' worth.
        assert len(stamps[name]) - count <= 4


async def test_a_skipped_run_is_reported_to_its_owner() -> None:
    """A poll still running when its next run is due is skipped, and its owner told (before:
    counted in the schedule only, where no metric read it)."""
    told: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.35)

    schedule = PollSchedule([("slow", 0.1, slow)], on_overrun=told.append)
    schedule.start()
    await asyncio.sleep(0.55)
    schedule.shutdown()
    assert len(told) >= 2 and set(told) == {"slow"}  # due every 0.1 s, each poll takes 0.35 s
