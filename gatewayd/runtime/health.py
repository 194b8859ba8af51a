"""The daemon's pulse: systemd watchdog and status, live figures in the queue, drain progress.

WATCHDOG=1 is sent from the event loop, and only after the writer thread has answered a ping:
a hung loop or a writer stuck on the disk stops the heartbeat, and systemd restarts the
service (`WatchdogSec=` in the unit). STATUS= tells `systemctl status` what the gateway is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from gatewayd.enos.client import MqttSession
from gatewayd.enos.topology import Topology
from gatewayd.errors import QueueError
from gatewayd.forward.loop import Forwarder
from gatewayd.queue.store import SampleQueue, now_ms
from gatewayd.runtime.notify import Notifier

log = logging.getLogger(__name__)

DEFAULT_TICK_S = 2.0
#: A backlog at least this large gets progress lines while it drains.
PROGRESS_BACKLOG = 1000
PROGRESS_EVERY_S = 30.0


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """Half of systemd's WatchdogSec (from $WATCHDOG_USEC), or None when there is no watchdog."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000 / 2


class Health:
    """Runs until cancelled; one tick every `tick_s` (shorter when the watchdog needs it)."""

    def __init__(
        self,
        queue: SampleQueue,
        session: MqttSession,
        forwarder: Forwarder,
        topology: Topology,
        notifier: Notifier,
    ) -> None:
        self.queue = queue
        self.session = session
        self.forwarder = forwarder
        self.topology = topology
        self.notifier = notifier
        self.watchdog_s = watchdog_interval_s()
        self.tick_s = min(DEFAULT_TICK_S, self.watchdog_s or DEFAULT_TICK_S)
        self.writer_ok = True
        self._uplink = ""
        self._since_ms = 0
        self._delivered = forwarder.delivered
        self._last_tick = time.monotonic()
        self._last_progress = 0.0
        self.pending = 0
        self.points_per_sample = 0.0
        self.oldest_ts_ms: int | None = None
        self.rate = 0.0
        self.last_ok = time.monotonic()  # the loop ran a tick and the writer answered

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            await self.tick()

    async def tick(self) -> None:
        now = time.monotonic()
        elapsed, self._last_tick = max(now - self._last_tick, 1e-3), now
        try:
            async with asyncio.timeout(max(self.tick_s, 1.0)):
                pending, self.oldest_ts_ms, self.points_per_sample = await self.queue.figures()
            self.writer_ok = True
            self.last_ok = time.monotonic()
        except (TimeoutError, QueueError) as exc:
            if self.writer_ok:
                log.error(
                    "writer_unresponsive error=%r action='withholding the watchdog'", str(exc)
                )
            self.writer_ok = False
            return
        uplink = "connected" if self.session.connected.is_set() else "disconnected"
        if self.session.refused and uplink == "disconnected":  # the hub refuses our login
            uplink = f"refused: {self.session.refused}"
        if uplink != self._uplink:
            self._uplink, self._since_ms = uplink, now_ms()
        rate = (self.forwarder.delivered - self._delivered) / elapsed
        self.pending, self.rate = pending, rate
        self._delivered = self.forwarder.delivered
        status = f"pending={pending} uplink={uplink} sent_per_s={rate:.0f}"
        if self.topology.parked:
            status += f" parked={len(self.topology.parked)}"
        if self.watchdog_s is not None:
            self.notifier.send(watchdog=1, status=status)
        else:
            self.notifier.status(status)
        self._progress(pending, rate, now)
        # On disk trouble the committer reports; the figures can wait for the next tick.
        with contextlib.suppress(QueueError):
            await self.queue.set_state(
                uplink=uplink,
                uplink_since_ms=self._since_ms,
                drain_rate_per_s=round(rate, 1),
                inflight_requests=self.forwarder.inflight,
                parked_devices=len(self.topology.parked),
                updated_ms=now_ms(),
            )

    def _progress(self, pending: int, rate: float, now: float) -> None:
        if pending < PROGRESS_BACKLOG or rate <= 0 or now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        log.info(
            "drain_progress done=%d left=%d rate_per_s=%.0f eta_s=%.0f",
            self.forwarder.delivered,
            pending,
            rate,
            pending / rate,
        )

    def alive(self) -> bool:
        """The loop ticked and the writer answered recently (for /healthz, from another thread)."""
        return self.writer_ok and time.monotonic() - self.last_ok < 3 * self.tick_s + 2
