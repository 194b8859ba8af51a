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
- a second lone refusal with no such 200 in between: a storm as before (HubStorm), and the held
  sample goes back to the queue's flow with the others, after the backoff;
- no evidence within HOLD_MAX_S (nothing else is sent, or nothing answered): it goes back to
  the flow, as after a storm's backoff (`forward.retry_max_s` is the longest of those).

One held at a time: that is what makes a second refusal with no 200 between a storm. The hold
is in memory: a restart sends the sample again like any other. It never dead-letters anything
by itself; only the evidence does.
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


class HeldRefusal:
    """The one lone refused sample waiting for evidence, if any. No I/O; the caller's clock."""

    def __init__(self, hold_max_s: float) -> None:
        self.hold_max_s = hold_max_s
        self.held: Held | None = None
        #: Rows taken from the hold to be asked again, until that request ends (not to be
        #: chosen by the loop meanwhile).
        self.asking: set[int] = set()
        #: Samples held so far (a test's and an operator's count; storms are counted apart).
        self.count = 0

    def skips(self, row_id: int) -> bool:
        """Is this row held, or being asked again (the loop must not choose it)?"""
        return row_id in self.asking or (self.held is not None and self.held.row.id == row_id)

    def hold(self, row: QueuedSample, method: str, refused_serial: int, now: float) -> bool:
        """Hold this sample aside; False if one is held already (a second refusal with no 200
        in between: a storm)."""
        if self.held is not None:
            return False
        self.held = Held(row, method, refused_serial, now)
        self.count += 1
        return True

    def due(self, ok_serial: int) -> Held | None:
        """A 200 to the request with this send serial: the held sample, if the request went
        after its refusal (it is to be asked again, and is no longer held)."""
        held = self.held
        if held is None or ok_serial <= held.refused_serial:
            return None
        self.held = None
        self.asking.add(held.row.id)
        return held

    def asked(self, row_id: int) -> None:
        """The request asking it again has ended, whatever its reply."""
        self.asking.discard(row_id)

    def release(self) -> bool:
        """Back to the flow (a storm); True if one was held."""
        released, self.held = self.held is not None, None
        return released

    def release_stale(self, now: float) -> bool:
        """Back to the flow if held longer than hold_max_s with no evidence; True if so."""
        if self.held is None or now - self.held.since < self.hold_max_s:
            return False
        self.held = None
        return True
