"""Can the wall clock be trusted to stamp readings? And re-stamping those taken while it could not.

Gateways without a battery-backed clock boot in 1970, or at the last shutdown time, and jump
when NTP syncs. A reading stamped then carries a wrong time for ever. So every reading also gets
the monotonic clock (which never jumps) and the boot it was taken in. While the wall clock is
not trusted, readings are committed but *held*: the forwarder does not send them. Once it is
trusted, held readings of this boot are re-stamped as `monotonic + (wall - monotonic now)`;
readings held in an earlier boot cannot be, and follow `clock.held_policy`.

Trusted means: the wall clock is after `clock.floor` (no gateway runs before its software was
built), it has not jumped against the monotonic clock since the last check (a jump means it was
just set, so the next check decides), and with `trust = "ntp"` the kernel says it is
synchronised (adjtimex). Under the unit's `ProtectClock=yes` even the read-only adjtimex is refused
(it is in the `@clock` seccomp set); then systemd-timesyncd's flag file says it instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gatewayd.clocks import now_ms
from gatewayd.config import ClockConfig

log = logging.getLogger(__name__)

_TIME_ERROR = 5  # adjtimex: the clock is not synchronised


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("reserved", ctypes.c_int * 11),
    ]


#: systemd-timesyncd creates it once the clock is synchronised (and removes it at its start).
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")


def adjtimex_state() -> int | None:
    """The kernel's clock state by a read-only adjtimex; None where the call is refused."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        state = int(libc.adjtimex(ctypes.byref(_Timex())))
    except (OSError, AttributeError):
        return None
    return state if state >= 0 else None


def kernel_synchronised(
    adjtimex: Callable[[], int | None] = adjtimex_state, timesync_flag: Path = TIMESYNC_FLAG
) -> bool:
    """NTP sync: the kernel's answer, else (seccomp refused adjtimex) systemd-timesyncd's flag."""
    state = adjtimex()
    if state is None:
        return timesync_flag.exists()
    return state != _TIME_ERROR


def boot_id() -> str:
    """This boot's id: monotonic readings only compare within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"process-{uuid.uuid4()}"


def floor_ms(date: str) -> int:
    return int(datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp() * 1000)


class ClockGuard:
    """Decides trust at each `check()`; `now()` gives (wall ms, monotonic ms, trusted)."""

    def __init__(
        self,
        cfg: ClockConfig,
        wall_ms: Callable[[], int] = now_ms,
        mono_ms: Callable[[], int] = lambda: time.monotonic_ns() // 1_000_000,
        synchronised: Callable[[], bool] = kernel_synchronised,
    ) -> None:
        self.cfg = cfg
        self.wall_ms = wall_ms
        self.mono_ms = mono_ms
        self.synchronised = synchronised
        self.boot = boot_id()
        self.floor_ms = floor_ms(cfg.floor)
        self._offset = wall_ms() - mono_ms()
        self.trusted = cfg.trust == "always" or self._plausible()
        self._start_offset = self._offset  # wall - monotonic at the start (queue_now_ms)
        if not self.trusted:
            log.warning(
                "clock_untrusted wall=%s note='readings are held until it is'",
                datetime.fromtimestamp(wall_ms() / 1000, UTC).isoformat(),
            )

    def _plausible(self) -> bool:
        if self.wall_ms() < self.floor_ms:
            return False
        return self.cfg.trust != "ntp" or self.synchronised()

    def check(self) -> bool:
        """Re-evaluate; True when the clock just became trusted (time to re-stamp)."""
        if self.cfg.trust == "always":
            return False
        offset = self.wall_ms() - self.mono_ms()
        jumped = abs(offset - self._offset) > self.cfg.jump_threshold_s * 1000
        if jumped:
            log.warning("clock_jump delta_s=%.1f", (offset - self._offset) / 1000)
        self._offset = offset
        was = self.trusted
        self.trusted = not jumped and self._plausible()
        if was and not self.trusted:
            log.warning("clock_untrusted note='readings are held until it is trusted again'")
        return self.trusted and not was

    def stamp(self) -> tuple[int, int, str | None]:
        """(wall ms, monotonic ms, boot id if the reading must be held else None)."""
        return self.wall_ms(), self.mono_ms(), None if self.trusted else self.boot

    def queue_now_ms(self) -> int:
        """The time the queue notes rows in and judges their stay by: the wall clock at the
        start carried on by the monotonic clock, so no step moves it within a run."""
        return self.mono_ms() + self._start_offset

    def resume_queue_clock(self, last_ms: int | None) -> None:
        """Carry on the queue's clock from where the last run left it (kept in the file).

        A restart must not take a stepped wall clock's word either: the queue's clock goes on
        from its last value, unless the kernel says the wall clock is synchronised (`ntp`),
        or the wall is behind it. Time the box was off then does not age the rows (eviction by
        age comes later by that much; the byte bound still holds).
        """
        if last_ms is None or (self.cfg.trust == "ntp" and self.synchronised()):
            return
        if last_ms < self.queue_now_ms():
            self._start_offset = last_ms - self.mono_ms()

    def age_now_ms(self) -> int | None:
        """`queue_now_ms()`, or None while the wall clock is not trusted (judge no age then)."""
        return self.queue_now_ms() if self.trusted else None

    def offset_ms(self) -> int:
        """wall - monotonic now: what turns a held reading's monotonic time into wall time."""
        return self.wall_ms() - self.mono_ms()
