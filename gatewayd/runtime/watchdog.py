"""Where the systemd watchdog is fed: only while every stage shows a fresh heartbeat.

Each long-running stage owns a `Pulse`: it calls `beat()` when it made progress, and wraps a
wait on the outside world (a reply from the hub, new data, the uplink coming back) in
`with pulse.idle():`, which counts as fresh for as long as it lasts. A stage stuck anywhere
else (an await that never returns, a loop that stopped turning) goes stale once it has been
silent for its deadline: WATCHDOG=1 is withheld from then on, `/healthz` names the stage, and
if it stays silent until `stalled_s` the supervisor stops the daemon (stage_stalled), so the
service restarts even where no systemd watchdog is configured.

The deadline is half of systemd's WatchdogSec ($WATCHDOG_USEC) when set (at least
MIN_DEADLINE_S), so that a stalled stage (deadline + one ping period, at most WatchdogSec) ends
the daemon with its name in the log before systemd's own kill; without a watchdog it is
DEFAULT_DEADLINE_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gatewayd.runtime.notify import Notifier

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 30.0
MIN_DEADLINE_S = 3.0
STATUS_EVERY_S = 2.0


def watchdog_usec_s(environ: dict[str, str] | None = None) -> float | None:
    """systemd's WatchdogSec (from $WATCHDOG_USEC) in seconds, or None when there is none."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000


class Pulse:
    """One stage's heartbeat. `beat()` may be called from any thread (it stores one float)."""

    def __init__(
        self,
        name: str,
        grace_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        waits_on: frozenset[str] = frozenset(),
    ) -> None:
        """`grace_s`: silence this stage may add to the deadline (a poll every minute).
        `waits_on`: stages whose stall stalls this one too (the forwarder reads and deletes
        through the queue writer): when both are stale, the stall is named after them."""
        self.name = name
        self.grace_s = grace_s
        self.waits_on = waits_on
        self._clock = clock
        self._last = clock()
        self._idle = 0

    def beat(self) -> None:
        self._last = self._clock()

    @contextlib.contextmanager
    def idle(self) -> Iterator[None]:
        """Waiting on the outside world: fresh while inside, and a beat on the way out."""
        self._idle += 1
        try:
            yield
        finally:
            self._idle -= 1
            self.beat()

    def silent_s(self, now: float) -> float:
        """Seconds since the last sign of life beyond the grace; 0 while idle."""
        return 0.0 if self._idle else max(0.0, now - self._last - self.grace_s)


@dataclass(frozen=True)
class Stale:
    stage: str
    silent_s: float


class StageStalled(Exception):
    """A stage showed no progress for `Watchdog.stalled_s`."""

    def __init__(self, stage: str, silent_s: float) -> None:
        self.stage = stage
        self.silent_s = silent_s
        super().__init__(f"no progress for {silent_s:.1f}s")


class Watchdog:
    """Every stage's pulse, checked every `period_s`; feeds systemd while all are fresh."""

    def __init__(
        self,
        notifier: Notifier,
        watchdog_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.watchdog_s = watchdog_s
        #: Half of WatchdogSec: a stalled stage stops the daemon before systemd would kill it.
        #: Not below MIN_DEADLINE_S: stages look up every second (an idle queue, the clock).
        half = watchdog_s / 2 if watchdog_s else DEFAULT_DEADLINE_S
        self.deadline_s = max(half, MIN_DEADLINE_S)
        #: At most half of WatchdogSec (systemd's advice), and often enough for STATUS=.
        self.period_s = min(half, STATUS_EVERY_S)
        #: Silence that ends the daemon. Checked every period, so with a watchdog it is found
        #: by WatchdogSec - period/2 at the latest: before systemd's kill, with room for a late
        #: tick on a busy machine.
        self.stalled_s = (
            max(self.deadline_s, watchdog_s - 1.5 * self.period_s)
            if watchdog_s
            else self.deadline_s + self.period_s
        )
        self._clock = clock
        self.pulses: dict[str, Pulse] = {}
        #: The stale stages as last checked (an immutable tuple, safe to read from any thread).
        self.stale: tuple[Stale, ...] = ()
        #: When the last check ran; a loop too busy or blocked to check is itself stale.
        self.checked_at = clock()
        #: Set after the first WATCHDOG=1 (the test hook waits for it).
        self.fed = asyncio.Event()
        self.status: Callable[[], str] = lambda: ""

    @property
    def enabled(self) -> bool:
        return self.watchdog_s is not None

    def watch(self, pulse: Pulse) -> Pulse:
        """Check this stage's pulse from now on (its silence counts from here)."""
        pulse.beat()
        self.pulses[pulse.name] = pulse
        return pulse

    def drop(self, name: str) -> None:
        """A stage that ended on purpose (a device removed by a reload)."""
        self.pulses.pop(name, None)

    def _waits_on(self, stage: str) -> frozenset[str]:
        pulse = self.pulses.get(stage)
        return pulse.waits_on if pulse is not None else frozenset()

    def check(self) -> tuple[Stale, ...]:
        """Which stages are silent past the deadline; logs a stage that just went stale."""
        now = self.checked_at = self._clock()
        stale = tuple(
            Stale(p.name, round(silent, 1))
            for p in list(self.pulses.values())
            if (silent := p.silent_s(now)) > self.deadline_s
        )
        before = {s.stage for s in self.stale}
        for s in stale:
            if s.stage not in before:
                log.error(
                    "stage_stale stage=%s silent_s=%.1f action='withholding the watchdog'",
                    s.stage,
                    s.silent_s,
                )
        self.stale = stale
        return stale

    def feed(self) -> bool:
        """One round: WATCHDOG=1 (with STATUS=) if nothing is stale; raise if a stage stalled."""
        stale = self.check()
        names = {s.stage for s in stale}
        # The first to go quiet, among the stages not waiting on another stale one (the cause,
        # not its consequence: a hung queue writer soon stalls the forwarder too).
        causes = [s for s in stale if not (self._waits_on(s.stage) & names)] or list(stale)
        worst = max(causes, key=lambda s: s.silent_s, default=None)
        if worst is not None and worst.silent_s > self.stalled_s:
            raise StageStalled(worst.stage, worst.silent_s)
        if stale:
            self.notifier.status("stale=" + ",".join(s.stage for s in stale))
            return False
        if self.watchdog_s is None:
            self.notifier.status(self.status())
        else:
            self.notifier.send(watchdog=1, status=self.status())
            self.fed.set()
        return True

    def problem(self, now: float | None = None) -> str | None:
        """Why the daemon is not healthy, or None (safe to call from the metrics thread)."""
        late = (self._clock() if now is None else now) - self.checked_at
        if late > self.deadline_s:
            return f"stale: event loop ({late:.1f}s without a watchdog check)"
        if self.stale:
            return "stale: " + ", ".join(f"{s.stage} ({s.silent_s:.1f}s)" for s in self.stale)
        return None

    async def run(self) -> None:
        """Feed until cancelled; StageStalled ends it (and, through the supervisor, the daemon)."""
        while True:
            await asyncio.sleep(self.period_s)
            self.feed()
