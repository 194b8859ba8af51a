"""Parked sub-devices: which, until when, and how much longer the next park of each lasts.

A device is parked when it cannot log in, or when the hub keeps answering 1212 for its data
after a repair. A park holds for its whole delay: nothing but its own retry (topology.py, when
it is due) or the hub's `combine.enable` ends it early. In particular a successful login of
the device by a repair made for *another* device does not: the hub answering 1212 to every
device's data while taking every login made two devices unpark each other within milliseconds,
for ever (operator finding F9).

Each further park of a device lasts twice as long (5 × `retry_min_s` up to 5 × `retry_max_s`),
until the hub takes a sample of it (`confirmed`). A successful login does not reset that count:
the hub taking a login and then refusing the data is exactly the case that must slow down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from gatewayd.backoff import backoff_ceiling
from gatewayd.config import ForwardConfig

# The topology's lines, wherever in it they are written (`logger=gatewayd.enos.topology`).
log = logging.getLogger("gatewayd.enos.topology")

Key = tuple[str, str]


class Parking:
    """The parked devices and their park counts; the clock is monotonic seconds."""

    def __init__(self, forward: ForwardConfig, clock: Callable[[], float]) -> None:
        self.forward = forward
        self.clock = clock
        self.parked: dict[Key, float] = {}  # key -> when to try again
        #: Parks since the hub last took a sample of the device: what its next delay grows with.
        self.strikes: dict[Key, int] = {}
        #: Times each device was parked since start (never reset; only tests read it so far).
        self.park_counts: dict[Key, int] = {}
        #: Set whenever a device is parked. Only tests wait on it (test_spine, test_refusals,
        #: test_uplink_faults: "a device was parked" without polling); the daemon never reads it.
        self.parked_signal = asyncio.Event()
        #: Grows whenever a device is unparked, so the forwarder re-reads its rows.
        self.generation = 0

    def held(self, key: Key) -> bool:
        """Parked, and its delay is not over yet."""
        at = self.parked.get(key)
        return at is not None and at > self.clock()

    def due(self) -> list[Key]:
        """Parked devices whose delay is over: to be tried again."""
        now = self.clock()
        return [key for key, at in self.parked.items() if at <= now]

    def next_due(self, excluding: set[Key]) -> float | None:
        """When the first park ends (monotonic s) but those of `excluding`; None if none."""
        ends = [at for key, at in self.parked.items() if key not in excluding]
        return min(ends) if ends else None

    def struck(self, keys: Iterable[Key]) -> bool:
        """Every one of these devices was parked since the hub last took a sample of it."""
        return all(key in self.strikes for key in keys)

    def park(self, key: Key, reason: str) -> bool:
        """Park the device for its next delay; False if it is parked already (a refusal of a
        request that was in flight when it was parked is the same refusal, and changes
        nothing)."""
        if self.held(key):
            return False
        self.park_counts[key] = self.park_counts.get(key, 0) + 1
        times = self.strikes.get(key, 0) + 1
        self.strikes[key] = times
        delay = backoff_ceiling(times, self.forward.retry_min_s * 5, self.forward.retry_max_s * 5)
        self.parked[key] = self.clock() + delay
        log.warning(
            "sub_device_parked device=%s/%s reason=%r retry_in_s=%.1f times=%d"
            " note='samples stay queued'",
            key[0],
            key[1],
            reason,
            delay,
            times,
        )
        self.parked_signal.set()
        return True

    def unpark(self, key: Key) -> None:
        """Let its samples go again (its park count stays, until the hub takes one of them)."""
        if self.parked.pop(key, None) is not None:
            log.info(
                "sub_device_unparked device=%s/%s times=%d note='its samples are sent again'",
                key[0],
                key[1],
                self.strikes.get(key, 0),
            )
            self.generation += 1

    def retry_now(self, key: Key) -> None:
        """Make a parked device due at once (the hub enabled it: log it in now)."""
        self.parked[key] = self.clock()

    def confirmed(self, keys: Iterable[Key]) -> None:
        """The hub took samples of these devices: their next park starts at the shortest delay."""
        for key in keys:
            self.strikes.pop(key, None)

    def forget(self, key: Key) -> None:
        """A device removed from the config."""
        self.parked.pop(key, None)
        self.strikes.pop(key, None)
