"""The polling stage of the daemon: a poller per device on one schedule, each under the watchdog.

Apart from daemon.py because it is the one stage that is built again while the daemon runs (a
reload replaces the device list): the pollers, their schedule and their watchdog entries are
made and taken down together here; the daemon only decides when.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from gatewayd.acquire.clock import ClockGuard
from gatewayd.acquire.poller import DevicePoller, build_pollers
from gatewayd.acquire.schedule import PollSchedule
from gatewayd.config import Settings
from gatewayd.queue.store import SampleQueue
from gatewayd.runtime.faults import FaultHook
from gatewayd.runtime.supervisor import Supervisor
from gatewayd.runtime.watchdog import Pulse, Watchdog


class PollingStage:
    """Mixed into Daemon, which sets these."""

    settings: Settings
    queue: SampleQueue
    clock: ClockGuard
    faults: FaultHook
    supervisor: Supervisor
    watchdog: Watchdog
    pollers: list[DevicePoller]
    scheduler: PollSchedule

    async def _poll(self, poller: DevicePoller, pulse: Pulse) -> None:
        """One scheduled poll, supervised: an exception stops the daemon, never just a log line."""
        try:
            await self.faults.point("acquire")
            await poller.poll()
        except Exception as exc:
            self.supervisor.fail(pulse.name, exc)
            return
        pulse.beat()

    def _start_polling(self) -> PollSchedule:
        for old in self.pollers:
            self.watchdog.drop(f"acquire/{old.device.name}")
        # Report by exception forgets what it sent whenever the queue or the hub loses readings.
        self.pollers, _endpoints = build_pollers(
            self.settings.devices, self.queue.put, self.clock.stamp, self.queue.losses
        )
        jobs = []
        for poller in self.pollers:
            interval = poller.device.interval_s
            # A poll every `interval` that may take `worst_case_s` (the first one up to an
            # interval late): that much silence is no stall.
            grace = 2 * interval + poller.worst_case_s
            pulse = Pulse(f"acquire/{poller.device.name}", grace_s=grace)
            self.watchdog.watch(pulse)
            jobs.append((poller.device.name, interval, self._poll_job(poller, pulse)))
        by_name = {poller.device.name: poller for poller in self.pollers}
        schedule = PollSchedule(jobs, on_overrun=lambda name: by_name[name].overran())
        schedule.start()
        return schedule

    def _poll_job(
        self, poller: DevicePoller, pulse: Pulse
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        return lambda: self._poll(poller, pulse)

    async def _stop_polling(self) -> None:
        if self.scheduler.running:  # a reload cancelled by a stop may have shut it down already
            self.scheduler.shutdown(wait=False)  # no new polls; the ones running finish below
        await asyncio.gather(*(poller.finish() for poller in self.pollers))
        for poller in self.pollers:
            poller.endpoint.close()
