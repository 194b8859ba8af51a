"""When each device is polled: every `interval_s` on the monotonic clock, whatever the wall does.

apscheduler 3 schedules by the wall clock: stepped back, it waited out the step before the next
poll (90 s without a reading); stepped forward by weeks, it listed every missed run time before
coalescing them (the event loop blocked ~45 s, memory 52 → 275 MB). Here each device has one
task that sleeps on the event loop's clock (monotonic), so a step changes nothing: the next
poll is one interval after the last one was due. A poll still running when the next is due
skips that run (counted), as `max_instances=1` did; runs missed while the process could not run
(suspended, or a poll that overran) are not made up, as `coalesce=True` did.

Devices that share an interval share one timer: one task per interval wakes once per slot
(SLOT_S apart, the devices spread over the slots) and starts the polls due in it. A task and a
timer per device cost a wake-up, a task switch and a timer-heap entry per device per interval:
200 devices at 1 s under a quarter-core quota missed no poll but had a p99 jitter of 417 ms
(issue 18); grouped into 50 slots a second, the same work takes a fraction of the wake-ups.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)


#: Polls due within this of one another start on one wake-up.
SLOT_S = 0.02

Job = tuple[str, float, Callable[[], Awaitable[None]]]


class PollSchedule:
    """Runs `poll()` of each job every `interval` seconds, spread over the first interval."""

    def __init__(
        self, jobs: Sequence[Job], on_overrun: Callable[[str], None] | None = None
    ) -> None:
        self.jobs = list(jobs)
        #: Told the job's name whenever a run is skipped (its owner counts it where it is seen).
        self.on_overrun = on_overrun
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    def start(self) -> None:
        """Start one timer per interval; the first polls spread over one interval (not all
        at one instant).

        A burst of hundreds of reads at the same moment delays the last ones (jitter) and loads
        the network and CPU in spikes (bench/poll.py, 200 devices: p99 jitter 35 ms when all
        started together, 1 ms spread).
        """
        groups: dict[float, list[Job]] = {}
        for job in self.jobs:
            groups.setdefault(job[1], []).append(job)
        for interval, jobs in groups.items():
            self._tasks.append(
                asyncio.create_task(self._every(interval, jobs), name=f"polls-every-{interval}s")
            )

    def shutdown(self, wait: bool = False) -> None:
        """No new polls; polls in progress are left to finish (DevicePoller.finish)."""
        for task in self._tasks:
            task.cancel()

    async def _every(self, interval: float, jobs: list[Job]) -> None:
        """One timer for every job of this interval: slot k of each interval starts its jobs."""
        loop = asyncio.get_running_loop()
        slots = max(1, min(len(jobs), int(interval / SLOT_S)))
        members: list[list[Job]] = [[] for _ in range(slots)]
        for index, job in enumerate(jobs):
            members[index * slots // len(jobs)].append(job)
        running: dict[str, asyncio.Task[None]] = {}
        start = loop.time()
        tick = 0  # slots since start
        while True:
            due = start + (tick // slots) * interval + (tick % slots) * interval / slots
            await asyncio.sleep(max(0.0, due - loop.time()))
            for name, _, poll in members[tick % slots]:
                last = running.get(name)
                if last is not None and not last.done():
                    if self.on_overrun is not None:  # the last poll is still at it: skipped
                        self.on_overrun(name)
                else:
                    running[name] = asyncio.create_task(_quiet(poll()), name=f"poll-{name}-run")
            tick += 1
            late = loop.time() - (due + interval)
            if late > 0:  # a whole interval missed (a suspended process): not made up
                tick += slots * int(late // interval + 1)


async def _quiet(run: Awaitable[None]) -> None:
    """A poll never raises (DevicePoller.poll); should one, it is logged, never lost silently."""
    try:
        await run
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("poll_crashed")
