"""The daemon's figures: one tick takes a snapshot of every stage, on the event loop.

Each tick asks the queue's writer thread for its figures (which also proves the thread is not
stuck: the writer thread's pulse beats only when it answered in time), takes a `Snapshot` of the other
stages, writes the live figures to the queue's `state` table (for `gatewayd queue stats`, which
also learns there that the daemon started or stopped, and when), and
logs the drain's progress while a large backlog goes out. The watchdog (watchdog.py) sends the
resulting STATUS= line; metrics and /healthz read the snapshot (metrics.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import replace

from gatewayd.acquire.poller import DevicePoller
from gatewayd.clocks import now_ms
from gatewayd.enos.client import MqttSession
from gatewayd.enos.topology import Topology
from gatewayd.errors import QueueError
from gatewayd.forward.loop import Forwarder
from gatewayd.logs import report_held_back
from gatewayd.queue.store import SampleQueue
from gatewayd.runtime.snapshots import (
    QueueFigures,
    Snapshot,
    forwarder_stats,
    poller_stats,
    uplink_figures,
)
from gatewayd.runtime.watchdog import Pulse

log = logging.getLogger(__name__)

DEFAULT_TICK_S = 2.0
#: A backlog at least this large gets progress lines while it drains.
PROGRESS_BACKLOG = 1000
PROGRESS_EVERY_S = 30.0
#: How long a scrape waits for the event loop to take a fresh snapshot.
SCRAPE_WAIT_S = 1.0
#: The drain rate and the ETA are taken over this long: one 2 s tick swings with every batch a
#: thin link answers (an ETA of 122-198 s while ~25 min remained, issue 18).
RATE_WINDOW_S = 30.0


class Health:
    """Runs until cancelled; one tick every `tick_s`."""

    def __init__(
        self,
        queue: SampleQueue,
        session: MqttSession,
        forwarder: Forwarder,
        topology: Topology,
        pollers: Callable[[], list[DevicePoller]] = list,
        tick_s: float = DEFAULT_TICK_S,
    ) -> None:
        self.queue = queue
        self.session = session
        self.forwarder = forwarder
        self.topology = topology
        self.pollers = pollers
        self.tick_s = tick_s
        self.pulse = Pulse("health")
        #: Beats when the writer thread answered a tick's figures request in time: it goes
        #: stale when the thread is stuck even while the committer has nothing to commit.
        self.writer_pulse = Pulse("queue-writer-thread")
        #: The latest figures; replaced whole, never changed (read from the metrics thread).
        self.snapshot = Snapshot()
        self.writer_ok = True
        self._last_tick = time.monotonic()
        #: (when, samples delivered, samples pending) at the ticks of the last RATE_WINDOW_S.
        self._history: deque[tuple[float, int, int]] = deque()
        self._last_progress = 0.0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            await self.tick()

    async def tick(self) -> None:
        self.pulse.beat()
        report_held_back()  # a count of held-back log lines never waits for another line
        now = time.monotonic()
        elapsed, self._last_tick = max(now - self._last_tick, 1e-3), now
        try:
            async with asyncio.timeout(max(self.tick_s, 1.0)):
                pending, oldest, per_sample = await self.queue.figures()
            self.writer_ok = True
        except (TimeoutError, QueueError) as exc:
            if self.writer_ok:
                log.error("writer_unresponsive error=%r", str(exc))
            self.writer_ok = False
            self.publish()
            return
        self.writer_pulse.beat()
        delivered = self.forwarder.delivered
        rate, shrink = self._rates(now, delivered, pending, elapsed)
        eta = self._eta(pending, rate, shrink)
        self.publish(
            replace(
                self._live(),
                queue=QueueFigures(
                    pending, oldest, per_sample, self.queue.buffered, self.queue.evicted
                ),
                rate=rate,
                eta_s=eta,
                taken_s=now,
                uplink_stalls=self.session.stalls,
            )
        )
        self._progress(pending, rate, eta, now)
        await self._write_state(self.snapshot)

    def _live(self) -> Snapshot:
        """The last snapshot with the stages' counters as they are now (on the loop)."""
        connected, dropped, parked = uplink_figures(self.session, self.topology)
        return replace(
            self.snapshot,
            forwarder=forwarder_stats(self.forwarder),
            pollers=tuple(poller_stats(p) for p in self.pollers()),
            connected=connected,
            dropped_replies=dropped,
            parked=parked,
            uplink_stalls=self.session.stalls,
            refused=self.session.refused,
            refusals=self.session.refusals,
            uplink=self.session.status,
            uplink_since_ms=self.session.status_since_ms,
        )

    def refresh(self) -> Snapshot:
        """Publish the counters as they are now; the queue's figures stay those of the tick."""
        self.publish(self._live())
        return self.snapshot

    def snapshot_for_scrape(self, loop: asyncio.AbstractEventLoop) -> Snapshot:
        """From another thread: a snapshot the loop takes now, or the last one if it is busy.

        A scrape then shows a reply counted a moment ago (not up to a tick late), and the
        live objects are still read only on the loop.
        """
        future: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

        def take() -> None:
            if future.set_running_or_notify_cancel():
                future.set_result(self.refresh())

        try:
            loop.call_soon_threadsafe(take)
            return future.result(timeout=SCRAPE_WAIT_S)
        except (RuntimeError, concurrent.futures.TimeoutError):  # closed or too busy
            future.cancel()
            return self.snapshot

    def publish(self, snapshot: Snapshot | None = None) -> None:
        """Swap in a new snapshot (or the last one with the writer's current state)."""
        self.snapshot = replace(snapshot or self.snapshot, writer_ok=self.writer_ok)

    def status_line(self) -> str:
        """STATUS= for `systemctl status`."""
        s = self.snapshot
        status = (
            f"pending={s.queue.pending} uplink={'connected' if s.connected else 'disconnected'}"
            f" sent_per_s={s.rate:.0f}"
        )
        return status + (f" parked={s.parked}" if s.parked else "")

    async def _write_state(self, s: Snapshot) -> None:
        await self._note(
            uplink=s.uplink,
            uplink_since_ms=s.uplink_since_ms,
            drain_rate_per_s=round(s.rate, 1),
            inflight_requests=s.forwarder.inflight,
            parked_devices=s.parked,
            updated_ms=now_ms(),
        )

    async def note_started(
        self, stack: AsyncExitStack, failure: Callable[[], BaseException | None]
    ) -> None:
        """The daemon runs (the queue just opened): what a stop or a previous run left in the
        state must not stand for this run until the first tick. On `stack`, right after the
        queue's close: `note_stopped` once every stage started later has stopped, with the
        supervisor's `failure`, else what ended the run."""
        stack.push_async_exit(lambda *exc: self.note_stopped(failure() or exc[1]))
        at = now_ms()
        await self._note(
            daemon="running",
            daemon_since_ms=at,
            uplink=self.session.status,
            uplink_since_ms=self.session.status_since_ms,
            **self._idle(at),
        )

    async def note_stopped(self, failure: BaseException | None) -> None:
        """Every stage has stopped, the queue is still open: leave the state saying so, and
        when, and why if a stage failed. The last tick's figures stayed otherwise, and a stopped
        daemon's queue said `uplink connected` for ever."""
        at = now_ms()
        failed = isinstance(failure, Exception)  # not a cancellation or an interrupt
        await self._note(
            daemon=f"stopped: {failure}" if failed else "stopped",
            daemon_since_ms=at,
            uplink="stopped",
            uplink_since_ms=at,
            **self._idle(at),
        )

    @staticmethod
    def _idle(at: int) -> dict[str, int | float]:
        return {
            "drain_rate_per_s": 0.0,
            "inflight_requests": 0,
            "parked_devices": 0,
            "updated_ms": at,
        }

    async def _note(self, **values: object) -> None:
        """Write to the queue's `state` table, bounded: a writer thread stuck after answering
        the figures must not hold the tick (or the stop). On disk trouble the committer reports;
        the figures can wait for the next tick."""
        with contextlib.suppress(QueueError, TimeoutError):
            async with asyncio.timeout(max(self.tick_s, 1.0)):
                await self.queue.set_state(**values)

    def _rates(
        self, now: float, delivered: int, pending: int, elapsed: float
    ) -> tuple[float, float]:
        """Samples sent per second, and how fast the queue shrinks (sent less taken in), both
        over the last RATE_WINDOW_S."""
        history = self._history
        if not history:
            history.append((now - elapsed, delivered, pending))
        history.append((now, delivered, pending))
        while len(history) > 2 and history[1][0] <= now - RATE_WINDOW_S:
            history.popleft()
        # Ticks with nothing delivered at the window's start are no part of the rate: the
        # session coming up after a start (5 round trips: 3 s at 600 ms) read as a slow drain,
        # 0.67-0.8 of the rate and an ETA up to 1.6x the truth while it stayed in the window.
        while len(history) > 2 and history[1][1] == history[0][1]:
            history.popleft()
        then, delivered_then, pending_then = history[0]
        span = max(now - then, 1e-3)
        return (delivered - delivered_then) / span, (pending_then - pending) / span

    def _eta(self, pending: int, rate: float, shrink: float) -> float | None:
        """Seconds until the queue is empty at the rate it shrank lately; None if it does not.
        What one tick sends is no backlog (live readings on their way): 0."""
        if pending <= rate * self.tick_s:
            return 0.0
        return pending / shrink if shrink > 0 else None

    def _progress(self, pending: int, rate: float, eta: float | None, now: float) -> None:
        if (
            pending < PROGRESS_BACKLOG
            or eta is None
            or now - self._last_progress < PROGRESS_EVERY_S
        ):
            return
        self._last_progress = now
        log.info(
            "drain_progress done=%d left=%d rate_per_s=%.0f eta_s=%.0f",
            self.forwarder.delivered,
            pending,
            rate,
            eta,
        )
