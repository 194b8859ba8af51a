"""Wiring and lifecycle: the only module that knows every part.

Start order: queue → MQTT session → forwarder → polling. Each start registers its teardown on an
AsyncExitStack, so a failed start unwinds what was already opened, in reverse. A stop runs the
same stack: polling stops first, the in-flight replies get `shutdown_timeout_s` to arrive, the
session closes, and the queue commits its last group and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from gatewayd.acquire.clock import ClockGuard
from gatewayd.acquire.poller import DevicePoller, build_pollers
from gatewayd.acquire.schedule import PollSchedule
from gatewayd.config import Settings
from gatewayd.enos.client import MqttSession
from gatewayd.enos.protocol import (
    METHOD_POST_BATCH,
    METHOD_RESUME_BATCH,
    measurepoint_topic,
    reply_topic,
)
from gatewayd.enos.topology import Topology, topology_topics
from gatewayd.errors import ConfigError, GatewaydError, QueueError
from gatewayd.forward.loop import Forwarder
from gatewayd.queue.store import SampleQueue, read_stats
from gatewayd.runtime.health import Health
from gatewayd.runtime.metrics import GatewayCollector, MetricsServer
from gatewayd.runtime.notify import Notifier

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 10.0
CLOCK_CHECK_S = 1.0


def session_topics(settings: Settings) -> list[str]:
    """Every topic the session subscribes to: our replies and the hub's commands."""
    gw = settings.gateway
    data = [
        reply_topic(measurepoint_topic(gw.product_key, gw.device_key, method))
        for method in (METHOD_RESUME_BATCH, METHOD_POST_BATCH)
    ]
    return data + topology_topics(gw)


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Daemon:
    """The running gateway: build with a validated Settings, then `await run(stop_event)`."""

    def __init__(
        self,
        settings: Settings,
        shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
        loader: Callable[[], Settings] | None = None,
        clock: ClockGuard | None = None,
    ) -> None:
        """`loader` re-reads the config on a reload request (SIGHUP); None: no reloads."""
        self.settings = settings
        self.loader = loader
        self.reload_requested = asyncio.Event()
        self.clock = clock or ClockGuard(settings.clock)
        self.shutdown_timeout_s = shutdown_timeout_s
        self.queue = SampleQueue(
            settings.queue,
            age_clock=self.clock.age_now_ms,
            enqueue_clock=self.clock.queue_now_ms,
            resume_clock=self.clock.resume_queue_clock,
        )
        self.session = MqttSession(settings.mqtt, settings.gateway, session_topics(settings))
        self.topology = Topology(self.session, settings.gateway, settings.devices, settings.forward)
        self.forwarder = Forwarder(
            self.queue, self.session, self.topology, settings.forward, settings.gateway
        )
        self.pollers: list[DevicePoller] = []
        self.started = asyncio.Event()
        self.notifier = Notifier()
        self.health = Health(self.queue, self.session, self.forwarder, self.topology, self.notifier)
        self.metrics: MetricsServer | None = None
        #: Set by a second stop signal: stop waiting for in-flight replies, leave now.
        self.hurry = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then stop gracefully."""
        async with AsyncExitStack() as stack:
            await self.queue.open()
            stack.push_async_callback(self.queue.close)
            stack.push_async_callback(_cancel, self._spawn(self.queue.run_committer()))
            await self.session.start()
            stack.push_async_callback(self.session.stop)
            stack.push_async_callback(_cancel, self._spawn(self.topology.run()))
            forwarder = self._spawn(self.forwarder.run())
            stack.push_async_callback(self._stop_forwarder, forwarder)
            stack.push_async_callback(_cancel, self._spawn(self.health.run()))
            self.scheduler = self._start_polling()
            stack.push_async_callback(self._stop_polling)
            stack.push_async_callback(_cancel, self._spawn(self._reloads()))
            stack.push_async_callback(_cancel, self._spawn(self._watch_clock()))
            if self.settings.metrics.listen:
                self.metrics = self._metrics_server()
                await asyncio.to_thread(self.metrics.start)
                stack.callback(self.metrics.stop)
            log.info(
                "started devices=%d queue=%s broker=%s:%d",
                len(self.pollers),
                self.settings.queue.path,
                self.settings.mqtt.host,
                self.settings.mqtt.port,
            )
            self.started.set()
            self.notifier.ready(f"polling {len(self.pollers)} devices")
            await stop.wait()
            log.info("stopping")
            self.notifier.stopping()
        await self._report_left()

    async def _watch_clock(self) -> None:
        """Re-stamp held readings once the wall clock can be trusted (gatewayd/acquire/clock.py)."""
        first = True
        while True:
            became_trusted = self.clock.check()
            if self.clock.trusted and (became_trusted or first):
                await self._release_held()
                first = False
            await asyncio.sleep(CLOCK_CHECK_S)

    async def _release_held(self) -> None:
        try:
            await self.queue.flush()  # held readings still in the commit buffer go first
            restamped = await self.queue.restamp(self.clock.boot, self.clock.offset_ms())
            earlier = await self.queue.release_other_boots(
                self.clock.boot, self.settings.clock.held_policy
            )
        except QueueError as exc:
            log.error("clock_restamp_failed error=%r", str(exc))
            return
        if restamped or earlier:
            log.info(
                "clock_trusted restamped=%d earlier_boot=%d policy=%s",
                restamped,
                earlier,
                self.settings.clock.held_policy,
            )
            self.queue.new_data.set()

    async def _reloads(self) -> None:
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Apply a re-read config's devices without a restart; refuse an invalid one."""
        if self.loader is None:
            log.warning("reload_unavailable note='started without a config file'")
            return False
        try:
            new = await asyncio.to_thread(self.loader)
        except ConfigError as exc:
            log.error(
                "reload_refused problems=%s note='the running config stays'",
                json.dumps(exc.problems),
            )
            return False
        fixed = [
            name
            for name in ("gateway", "mqtt", "queue", "forward", "metrics")
            if getattr(new, name) != getattr(self.settings, name)
        ]
        if fixed:
            log.warning(
                "reload_needs_restart sections=%s note='kept the running values'", ",".join(fixed)
            )
        old_names = {d.name for d in self.settings.devices}
        new_names = {d.name for d in new.devices}
        if new.devices != self.settings.devices:
            self.settings = self.settings.model_copy(update={"devices": new.devices})
            await self._stop_polling()
            self.scheduler = self._start_polling()
            self.topology.update(new.devices)
        log.info(
            "reloaded devices=%d added=%s removed=%s",
            len(new.devices),
            ",".join(sorted(new_names - old_names)) or "-",
            ",".join(sorted(old_names - new_names)) or "-",
        )
        return True

    def _metrics_server(self) -> MetricsServer:
        collector = GatewayCollector(
            self.queue, self.session, self.forwarder, self.health, lambda: self.pollers
        )
        return MetricsServer(self.settings.metrics.address, collector, self.health)

    async def _report_left(self) -> None:
        """After the queue is closed: say what stays behind for the next start."""
        try:
            stats = await asyncio.to_thread(read_stats, self.settings.queue.path)
        except GatewaydError:
            return
        log.info("stopped pending=%d rejected=%d", stats.pending_samples, stats.rejected)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task_failed")
                raise

        return asyncio.create_task(guarded())

    def _start_polling(self) -> PollSchedule:
        self.pollers, _endpoints = build_pollers(
            self.settings.devices, self.queue.put, self.clock.stamp
        )
        schedule = PollSchedule(
            [(p.device.name, p.device.interval_s, p.poll) for p in self.pollers]
        )
        schedule.start()
        return schedule

    async def _stop_polling(self) -> None:
        if self.scheduler.running:  # a reload cancelled by a stop may have shut it down already
            self.scheduler.shutdown(wait=False)  # no new polls; the ones running finish below
        await asyncio.gather(*(poller.finish() for poller in self.pollers))
        for poller in self.pollers:
            poller.endpoint.close()

    async def _stop_forwarder(self, task: asyncio.Task[None]) -> None:
        """Let in-flight requests get their replies, up to the bound or a second stop signal."""
        await _cancel(task)
        waiting = asyncio.ensure_future(self.forwarder.wait_inflight(self.shutdown_timeout_s))
        hurry = asyncio.ensure_future(self.hurry.wait())
        await asyncio.wait({waiting, hurry}, return_when=asyncio.FIRST_COMPLETED)
        hurry.cancel()
        if not waiting.done():
            waiting.cancel()
            log.warning("stop_hurried note='not waiting for replies any longer'")
        left = self.forwarder.inflight
        if left:
            log.warning(
                "stopped_with_unanswered requests=%d note='their samples stay queued'", left
            )
