"""A lone refused sample with no evidence either way, held aside instead of backing off.

Live requests often carry one sample of one device alone. If that device reads a point the
hub's model lacks, its refusal comes before any 200 could say the hub takes other samples
(refusal_evidence.py, rule 1), and it used to be put down to a storm: sending backed off and
every other device's live readings waited (an operator test: median reading-to-200 0.13 s ->
0.54 s, 9 storms in 10 dead letters). One lone refusal is no storm yet: the sample is held
aside (its row is skipped when the next rows are chosen, as a parked device's are) and the
flow goes on. Then:

- a 200 to a request SENT after its refusal (by send serial, as in rule 1): it is asked once
  more, alone; refused again, it is dead-lettered (evidence=refused_again), taken, delivered;
- a lone refusal of another device with no such 200 in between: a storm as before (HubStorm),
  and the held samples go back to the queue's flow with the others, after the backoff;
- no evidence within HOLD_MAX_S (nothing else is sent, or nothing answered): it goes back to
  the flow, as after a storm's backoff (`forward.retry_max_s` is the longest of those).

The lone refusals of one bisection are held together, whatever their devices (an adversary:
two devices with a wrong model and one good device, taken in turn; every bisection ended on two
lone refusals of two devices, called a storm, and the retry began with the same oldest rows: the
good device delivered nothing for ~60 s, again and again); the rest of the batch is looked at
again at once, without them. Later lone refusals join the hold only if their devices are held
already (a bad device polled faster than the good ones), up to HOLD_MAX_SAMPLES; another device
refused with no 200 in between is a storm. The hold is in memory: a restart sends the samples
again like any other. It never dead-letters anything by itself; only the evidence does.
"""

from __future__ import annotations

from dataclasses import dataclass

from gatewayd.model import QueuedSample


@dataclass(frozen=True)
class Held:
    row: QueuedSample
    method: str
    #: The send serial of the request whose refusal it was: only a 200 to a later one counts.
    refused_serial: int
    #: When it was held (the handler's monotonic clock).
    since: float


#: Lone refused samples held at once, at most: a refusal past that with no 200 is a storm.
HOLD_MAX_SAMPLES = 8


class HeldRefusal:
    """The lone refused samples waiting for evidence. No I/O; the caller's clock."""

    def __init__(self, hold_max_s: float) -> None:
        self.hold_max_s = hold_max_s
        #: By row id: the loop asks `skips` of every row it reads.
        self.held: dict[int, Held] = {}
        #: Rows taken from the hold to be asked again, until that request ends (not to be
        #: chosen by the loop meanwhile).
        self.asking: set[int] = set()
        #: Samples held so far (a test's and an operator's count; storms are counted apart).
        self.count = 0

    def skips(self, row_id: int) -> bool:
        """Is this row held, or being asked again (the loop must not choose it)?"""
        return row_id in self.asking or row_id in self.held

    def devices(self) -> set[tuple[str, str]]:
        return {(h.row.product_key, h.row.device_key) for h in self.held.values()}

    def hold(
        self,
        rows: list[QueuedSample],
        method: str,
        refused_serial: int,
        now: float,
    ) -> bool:
        """Hold these lone refused samples aside: the first ones (of one bisection, whatever
        their devices), or one more of a device already held (a bad device polled faster than
        the good ones is refused again before any 200), up to HOLD_MAX_SAMPLES. False (a
        storm): another device refused with no 200 in between, several more, or too many."""
        devices = {(r.product_key, r.device_key) for r in rows}
        if self.held and (len(rows) > 1 or not devices <= self.devices()):
            return False
        if len(self.held) + len(rows) > HOLD_MAX_SAMPLES:
            return False
        self.held.update({row.id: Held(row, method, refused_serial, now) for row in rows})
        self.count += len(rows)
        return True

    def due(self, ok_serial: int) -> list[Held]:
        """A 200 to the request with this send serial: the held samples whose refusal came
        before that request went (to be asked again; no longer held)."""
        due = [h for h in self.held.values() if ok_serial > h.refused_serial]
        for h in due:
            del self.held[h.row.id]
            self.asking.add(h.row.id)
        return due

    def asked(self, row_id: int) -> None:
        """The request asking it again has ended, whatever its reply."""
        self.asking.discard(row_id)

    def release(self) -> None:
        """Back to the flow (a storm)."""
        self.held = {}

    def release_stale(self, now: float) -> bool:
        """Back to the flow if held longer than hold_max_s with no evidence; True if so."""
        if not self.held or now - min(h.since for h in self.held.values()) < self.hold_max_s:
            return False
        self.held = {}
        return True
