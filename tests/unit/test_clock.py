from __future__ import annotations

from pathlib import Path

from gatewayd.acquire.clock import ClockGuard, floor_ms
from gatewayd.config import ClockConfig

REAL_MS = floor_ms("2026-11-25")


class FakeClock:
    def __init__(self, wall_ms: int) -> None:
        self.wall = wall_ms
        self.mono = 5_000

    def tick(self, ms: int) -> None:
        self.wall += ms
        self.mono += ms


def guard(clock: FakeClock, **cfg: object) -> ClockGuard:
    return ClockGuard(
        ClockConfig(**cfg),
        lambda: clock.wall,
        lambda: clock.mono,  # type: ignore[arg-type]
        synchronised=lambda: False,
    )


def test_a_1970_clock_is_held_until_it_jumps_and_settles() -> None:
    clock = FakeClock(wall_ms=60_000)  # booted in 1970
    g = guard(clock)
    assert not g.trusted and g.stamp()[2] == g.boot
    taken_mono = clock.mono
    clock.tick(10_000)
    assert not g.check()  # still 1970
    clock.wall = REAL_MS  # NTP sets the clock
    clock.tick(1_000)
    assert not g.check() and not g.trusted  # a jump: the next check decides
    clock.tick(1_000)
    assert g.check() and g.trusted  # became trusted now: time to re-stamp
    # A reading taken 12 s before now gets the wall time of 12 s ago.
    assert taken_mono + g.offset_ms() == clock.wall - 12_000
    assert g.stamp()[2] is None


def test_a_plausible_clock_is_trusted_and_a_jump_withdraws_trust_once() -> None:
    clock = FakeClock(wall_ms=REAL_MS)
    g = guard(clock)
    assert g.trusted and not g.check()
    clock.wall += 3_600_000  # stepped by an hour
    assert not g.check() and not g.trusted
    clock.tick(1_000)
    assert g.check()


def test_ntp_trust_needs_the_kernel_and_always_needs_nothing() -> None:
    clock = FakeClock(wall_ms=REAL_MS)
    assert not guard(clock, trust="ntp").trusted
    assert guard(FakeClock(wall_ms=0), trust="always").trusted


def test_sync_is_read_from_timesyncd_where_adjtimex_is_refused(tmp_path: Path) -> None:
    """Under the unit's ProtectClock=, even the read-only adjtimex fails with EPERM (issue 17)."""
    from gatewayd.acquire.clock import kernel_synchronised

    flag = tmp_path / "synchronized"
    refused = lambda: None  # noqa: E731 - adjtimex answered EPERM
    assert not kernel_synchronised(adjtimex=refused, timesync_flag=flag)
    flag.touch()
    assert kernel_synchronised(adjtimex=refused, timesync_flag=flag)
    # Where adjtimex answers, it decides: TIME_ERROR (5) is not synchronised, whatever the flag.
    assert not kernel_synchronised(adjtimex=lambda: 5, timesync_flag=flag)
    assert kernel_synchronised(adjtimex=lambda: 0, timesync_flag=tmp_path / "none")
