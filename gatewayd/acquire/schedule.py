"""When each device is polled: every `interval_s` on the monotonic clock, whatever the wall does.

apscheduler 3 schedules by the wall clock: stepped back, it waited out the step before the next
poll (90 s without a reading); stepped forward by weeks, it listed every missed run time before
coalescing them (the event loop blocked ~45 s, memory 52 → 275 MB). Here each device has one
task that sleeps on the event loop's clock (monotonic), so a step changes nothing: the next
poll is one interval after the last one was due. A poll still running when the next is due
skips that run (counted), as `max_instances=1` did; runs missed while the process could not run
(suspended, or a poll that overran) are not made up, as `coalesce=True` did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)


class PollSchedule:
    """Runs `poll()` of each job every `interval` seconds, spread over the first interval."""

    def __init__(self, jobs: Sequence[tuple[str, float, Callable[[], Awaitable[None]]]]) -> None:
        self.jobs = list(jobs)
        self.overruns: dict[str, int] = {name: 0 for name, _, _ in self.jobs}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    def start(self) -> None:
        """Start every job; the first polls spread over one interval (not all at one instant).

        A burst of hundreds of reads at the same moment delays the last ones (jitter) and loads
        the network and CPU in spikes (bench/poll.py, 200 devices: p99 jitter 35 ms when all
        started together, 1 ms spread).
        """
        count = len(self.jobs)
        for index, (name, interval, poll) in enumerate(self.jobs):
            delay = interval * index / count
            self._tasks.append(
                asyncio.create_task(self._every(name, interval, delay, poll), name=f"poll-{name}")
            )

    def shutdown(self, wait: bool = False) -> None:
        """No new polls; polls in progress are left to finish (DevicePoller.finish)."""
        for task in self._tasks:
            task.cancel()

    async def _every(
        self, name: str, interval: float, delay: float, poll: Callable[[], Awaitable[None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        running: asyncio.Task[None] | None = None
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            if running is not None and not running.done():
                self.overruns[name] += 1  # the last poll is still at it: skip this run
            else:
                running = asyncio.create_task(_quiet(poll()), name=f"poll-{name}-run")
            due += interval
            late = loop.time() - due
            if late > 0:  # runs missed (a suspended process): not made up, one poll now
                due += interval * (late // interval + 1)


async def _quiet(run: Awaitable[None]) -> None:
    """A poll never raises (DevicePoller.poll); should one, it is logged, never lost silently."""
    try:
        await run
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("poll_crashed")
