"""Wiring and lifecycle: the only module that knows every part.

Start order: instance lock → queue → MQTT session → forwarder → polling → metrics → watchdog.
Each start registers its teardown on an AsyncExitStack, so a failed start unwinds what was
already opened, in reverse. A stop runs the same stack: polling stops first, the in-flight
replies get `shutdown_timeout_s` to arrive, the session closes, and the queue commits its last
group and closes. Every stage runs under the supervisor (supervisor.py): one that fails or
stalls triggers the same ordered stop, and `run` then raises StageFailed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatewayd.acquire.clock import ClockGuard
from gatewayd.acquire.poller import DevicePoller
from gatewayd.config import Settings
from gatewayd.early import resume_collections
from gatewayd.enos.client import MqttSession
from gatewayd.enos.protocol import (
    METHOD_POST_BATCH,
    METHOD_RESUME_BATCH,
    measurepoint_topic,
    reply_topic,
)
from gatewayd.enos.topology import Topology, topology_topics
from gatewayd.errors import GatewaydError, QueueError
from gatewayd.forward.loop import Forwarder
from gatewayd.logs import report_held_back
from gatewayd.queue.store import SampleQueue, read_stats
from gatewayd.runtime.faults import FaultHook
from gatewayd.runtime.faults import from_env as faults_from_env
from gatewayd.runtime.health import DEFAULT_TICK_S, Health
from gatewayd.runtime.lock import QueueLock
from gatewayd.runtime.notify import Notifier
from gatewayd.runtime.polling import PollingStage
from gatewayd.runtime.reload import Reloader
from gatewayd.runtime.supervisor import Supervisor, cancel
from gatewayd.runtime.watchdog import Pulse, Watchdog, watchdog_usec_s

if TYPE_CHECKING:  # prometheus_client is imported only when /metrics is asked for
    from gatewayd.runtime.metrics import MetricsServer

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


class Daemon(PollingStage):
    """The running gateway: build with a validated Settings, then `await run(stop_event)`.

    `run` ends with StageFailed when a stage failed or stalled (runtime/supervisor.py), and with
    QueueLocked when another daemon runs on the same queue (runtime/lock.py).
    """

    def __init__(
        self,
        settings: Settings,
        shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
        loader: Callable[[], Settings] | None = None,
        clock: ClockGuard | None = None,
    ) -> None:
        """`loader` re-reads the config on a reload request (SIGHUP); None: no reloads."""
        self.settings = settings
        self.reloader = Reloader(loader, lambda: self.settings, self._apply_devices)
        #: Set by SIGHUP (runtime/signals.py).
        self.reload_requested = self.reloader.requested
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
        self.supervisor = Supervisor()
        self.faults = FaultHook(faults_from_env())
        self.watchdog = Watchdog(self.notifier, watchdog_usec_s())
        self.health = Health(
            self.queue,
            self.session,
            self.forwarder,
            self.topology,
            lambda: self.pollers,
            tick_s=min(DEFAULT_TICK_S, self.watchdog.period_s),
        )
        self.watchdog.status = self.health.status_line
        self.clock_pulse = Pulse("clock")
        self.metrics_pulse = Pulse("metrics")
        self.metrics: MetricsServer | None = None
        #: Set by a second stop signal: stop waiting for in-flight replies, leave now.
        self.hurry = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set or a stage fails, then stop in order."""
        lock = QueueLock(Path(self.settings.queue.path))
        lock.acquire()
        try:
            await self._run(stop)
        finally:
            lock.release()
        await self._report_left()
        if self.supervisor.failure is not None:
            raise self.supervisor.failure

    async def _run(self, stop: asyncio.Event) -> None:
        async with AsyncExitStack() as stack:
            stack.callback(self.notifier.close)
            supervisor = self.supervisor
            supervisor.watch_threads()
            stack.callback(supervisor.unwatch_threads)
            await self.queue.open()
            stack.push_async_callback(self.queue.close)
            await self.health.note_started(stack, lambda: supervisor.failure)
            self._stage("queue-writer", self.queue.run_committer(), stack, self.queue.pulse)
            await self.session.start()
            stack.push_async_callback(self.session.stop)
            self._stage("topology", self.topology.run(), stack, self.topology.pulse)
            forwarder = self._spawn("forwarder", self.forwarder.run())
            self.watchdog.watch(self.forwarder.pulse)
            stack.push_async_callback(self._stop_forwarder, forwarder)
            self._stage("health", self.health.run(), stack, self.health.pulse)
            self.watchdog.watch(self.health.writer_pulse)
            self.scheduler = self._start_polling()
            stack.push_async_callback(self._stop_polling)
            self._stage("reload", self.reloader.run(), stack)
            self._stage("clock", self._watch_clock(), stack, self.clock_pulse)
            # Not through the fault hook: `uplink:crash` strikes in paho's thread itself.
            stack.push_async_callback(
                cancel, self.supervisor.spawn("uplink", self._watch_session())
            )
            if self.settings.metrics.listen:
                self.metrics = self._metrics_server()
                await asyncio.to_thread(self.metrics.start)
                self.watchdog.watch(self.metrics_pulse)
                stack.push_async_callback(self.metrics.aclose)
            self._stage("watchdog", self.watchdog.run(), stack)
            arming = asyncio.create_task(self._arm_faults())
            stack.push_async_callback(cancel, arming)
            stack.callback(self.faults.release)  # a hung test thread must not hold the stop
            log.info(
                "started devices=%d queue=%s broker=%s:%d",
                len(self.pollers),
                self.settings.queue.path,
                self.settings.mqtt.host,
                self.settings.mqtt.port,
            )
            self.started.set()
            self.notifier.ready(f"polling {len(self.pollers)} devices")
            resume_collections()  # held while starting (gatewayd/early.py)
            await self._until_stop_or_failure(stop)
            supervisor.stopping = True
            if supervisor.failure is not None:
                self.hurry.set()  # a broken daemon does not wait for replies
            log.info("stopping")
            self.notifier.stopping()

    async def _until_stop_or_failure(self, stop: asyncio.Event) -> None:
        waiters = {
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self.supervisor.failed.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _spawn(self, stage: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self.supervisor.spawn(stage, self.faults.wrap(stage, coro))

    def _stage(
        self,
        stage: str,
        coro: Coroutine[Any, Any, None],
        stack: AsyncExitStack,
        pulse: Pulse | None = None,
    ) -> None:
        """Spawn a supervised stage, watch its pulse, and cancel it on the way out."""
        if pulse is not None:
            self.watchdog.watch(pulse)
        stack.push_async_callback(cancel, self._spawn(stage, coro))

    async def _arm_faults(self) -> None:
        """Test hook (runtime/faults.py): arm once the watchdog was fed, or once started."""
        if self.faults.fault is None:
            return
        await (self.watchdog.fed if self.watchdog.enabled else self.started).wait()
        self.faults.arm()
        if self.faults.blocks_writer:  # the writer thread itself stops answering
            await self.queue._run(self.faults.thread_point, "queue-writer")
        await self.faults.break_uplink(lambda: self.session._client)

    async def _watch_session(self) -> None:
        """A session that gave up (enos/network.py: paho's thread kept failing) is a failed
        stage: the daemon stops and the service manager restarts it, never runs half dead."""
        await self.session.failed.wait()
        raise GatewaydError(f"the MQTT session failed: {self.session.failure}")

    async def _watch_clock(self) -> None:
        """Re-stamp held readings once the wall clock can be trusted (gatewayd/acquire/clock.py)."""
        first = True
        while True:
            self.clock_pulse.beat()
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

    async def _apply_devices(self, settings: Settings) -> None:
        """A reloaded device list: new pollers, and the topology told."""
        self.settings = settings
        await self._stop_polling()
        self.scheduler = self._start_polling()
        self.topology.update(settings.devices)

    def _metrics_server(self) -> MetricsServer:
        from gatewayd.runtime.metrics import GatewayCollector, MetricsServer

        loop = asyncio.get_running_loop()
        collector = GatewayCollector(self.queue.path, lambda: self.health.snapshot_for_scrape(loop))

        def tick() -> None:  # in the server's thread, between requests
            self.faults.thread_point("metrics")
            self.metrics_pulse.beat()

        return MetricsServer(
            self.settings.metrics.address,
            collector,
            self._problem,
            on_tick=tick,
            wrap=lambda fn: self.supervisor.in_thread("metrics", fn),
        )

    def _problem(self) -> str | None:
        """Why /healthz says 503 (read from the metrics thread: immutable values only)."""
        problem = self.watchdog.problem()
        if problem is not None:
            return problem
        if not self.health.snapshot.writer_ok:
            return "stalled: the queue's writer thread does not answer"
        return None

    async def _report_left(self) -> None:
        """After the queue is closed: say what stays behind for the next start (and what the
        log limiter still holds back: its counts would end with the process)."""
        report_held_back(everything=True)
        try:
            stats = await asyncio.to_thread(read_stats, self.settings.queue.path)
        except GatewaydError:
            return
        log.info("stopped pending=%d rejected=%d", stats.pending_samples, stats.rejected)

    async def _stop_forwarder(self, task: asyncio.Task[None]) -> None:
        """Let in-flight requests get their replies, up to the bound or a second stop signal."""
        await cancel(task)
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
