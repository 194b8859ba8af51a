"""The watchdog's rule: fed only while every stage's pulse is fresh (or idle)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gatewayd.runtime.notify import Notifier
from gatewayd.runtime.watchdog import Pulse, StageStalled, Watchdog, watchdog_usec_s


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def notify(tmp_path: Path):  # type: ignore[no-untyped-def]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "n.sock"))
    sock.setblocking(False)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_watchdog_usec_is_read_only_for_this_process() -> None:
    assert watchdog_usec_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_usec_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_usec_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_usec_s({}) is None


def test_fed_while_fresh_withheld_when_stale_and_stalled_after_one_more_period(
    notify: socket.socket, tmp_path: Path
) -> None:
    clock = Clock()
    notifier = Notifier(str(tmp_path / "n.sock"))
    dog = Watchdog(notifier, watchdog_s=8.0, clock=clock)
    dog.status = lambda: "pending=0"
    busy = dog.watch(Pulse("forwarder", clock=clock))
    quiet = dog.watch(Pulse("topology", clock=clock))
    assert dog.period_s == 2.0 and dog.deadline_s == 4.0 and dog.stalled_s == 5.0
    with quiet.idle():  # waiting on the hub: fresh however long it lasts
        for _ in range(3):
            clock.now += 2.0
            busy.beat()
            assert dog.feed()
        assert drain(notify) == ["WATCHDOG=1\nSTATUS=pending=0"] * 3
        clock.now += 4.5  # the forwarder stops making progress
        assert not dog.feed()
        assert [s.stage for s in dog.stale] == ["forwarder"]
        assert all("WATCHDOG=1" not in m for m in drain(notify))
        assert dog.problem() == "stale: forwarder (4.5s)"
        clock.now += 1.0  # 5.5 s: past stalled_s, found before WatchdogSec (8 s)
        with pytest.raises(StageStalled) as stalled:
            dog.feed()
    assert stalled.value.stage == "forwarder"
    clock.now += 1.0  # leaving idle is a beat: the topology is fresh again
    assert quiet.silent_s(clock.now) == 1.0
    notifier.close()


def test_grace_and_dropped_pulses(tmp_path: Path) -> None:
    clock = Clock()
    dog = Watchdog(Notifier(""), watchdog_s=None, clock=clock)
    assert dog.deadline_s == 30.0 and not dog.enabled
    poll = dog.watch(Pulse("acquire/meter", grace_s=60.0, clock=clock))
    clock.now += 80.0  # a device polled every minute is not stale after 80 s
    assert dog.check() == ()
    clock.now += 20.0
    assert [s.stage for s in dog.check()] == ["acquire/meter"]
    dog.drop(poll.name)  # removed by a reload
    assert dog.check() == () and dog.problem() is None


def test_a_loop_that_stopped_checking_is_reported(tmp_path: Path) -> None:
    clock = Clock()
    dog = Watchdog(Notifier(""), watchdog_s=4.0, clock=clock)
    assert dog.deadline_s == 3.0  # never below MIN_DEADLINE_S
    dog.check()
    assert dog.problem() is None
    clock.now += 3.5
    problem = dog.problem()
    assert problem is not None and "event loop" in problem


def test_a_stall_is_named_after_the_stage_the_others_wait_on(tmp_path: Path) -> None:
    """A hung queue writer stalls the forwarder too, and which went quiet first is a race (CI
    once named the forwarder). The stage the forwarder waits on is named."""
    clock = Clock()
    notifier = Notifier(str(tmp_path / "n.sock"))
    dog = Watchdog(notifier, watchdog_s=8.0, clock=clock)
    dog.watch(Pulse("forwarder", clock=clock, waits_on=frozenset({"queue-writer"})))
    clock.now += 1.0
    dog.watch(Pulse("queue-writer", clock=clock))  # quiet a second after the forwarder
    clock.now += 4.5
    assert not dog.feed()  # the forwarder is past stalled_s, the writer only stale: wait
    clock.now += 1.0
    with pytest.raises(StageStalled) as stalled:
        dog.feed()
    assert stalled.value.stage == "queue-writer"
    notifier.close()
