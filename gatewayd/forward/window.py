"""How many bytes may await replies at once, sized by the link instead of by a count.

A fixed count of requests in flight is right on one link only. Four requests of ~150 KB are a
few milliseconds of loopback but 20 s of a 256 kbit/s cellular uplink: the last one's reply
then comes after `reply_timeout_s` although the hub stored it, its rows are sent again, and
the link carries duplicates while the backlog waits (issue 18's re-send loop).

So the window is measured, as TCP's BBR does for packets: every reply gives a delivery-rate
sample (bytes answered while the request was out, over the time it was out) and a round-trip
sample: the time it was out, less the time its own bytes and those queued ahead of it needed
at that rate. What is queued ahead is modelled as a fluid (bytes sent, drained at the measured
rate, never more than what still awaits replies): the bytes in flight alone would count the
ones already on their way, and a round trip taken with the queue in it would grow the window,
which grows the queue. A windowed maximum of the rates is the link's rate, a windowed minimum of the round trips its
base round trip, their product the bandwidth-delay product (BDP). Then:

- backlog bytes in flight stay under WINDOW_GAIN x BDP: the pipe stays full, and the queue
  behind it holds about one round trip of bytes, so a live request queued behind it waits
  about a round trip, not the many seconds a count-based window allowed;
- a backlog request carries about half a BDP, but at least what the link moves in
  BATCH_MIN_S (so a fast link is not split into tiny requests) and at most batch_max_bytes;
- a request's reply deadline is `reply_timeout_s` (the hub's share) plus twice the time the
  bytes ahead of it and its own need at the measured rate, plus two round trips: a slow link
  never times out a request the hub is handling.

Until the first replies come in, the window is INITIAL_BATCH_BYTES x 2, and deadlines assume
FLOOR_RATE. A request that got no reply clears the rate samples (the link may have slowed).
Pure logic: the clock is injected; loop.py and replies.py call it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: Bytes in flight allowed, in BDPs.
WINDOW_GAIN = 2.0
#: A backlog request is about this many BDPs...
BATCH_BDP = 0.5
#: ...but at least what the link moves in this long.
BATCH_MIN_S = 0.25
#: Never a request smaller than this (the envelope and the reply would dominate).
BATCH_FLOOR_BYTES = 4096
#: Before any reply: this much per request, two requests.
INITIAL_BATCH_BYTES = 16384
#: Before any reply, deadlines assume a link at least this fast (bytes/s: 16 kbit/s).
FLOOR_RATE = 2000.0
#: How long rate samples (maximum) and round-trip samples (minimum) are remembered.
RATE_MEMORY_S = 10.0
RTT_MEMORY_S = 30.0


@dataclass
class Ticket:
    """One published request, as the window saw it go."""

    size: int
    sent_s: float
    delivered_at_send: int  # the window's delivered bytes when it went
    ahead: int  # bytes queued before the link when it went (modelled), its own included


class LinkWindow:
    """Bytes in flight, the link's rate and round trip as measured from replies."""

    def __init__(self, batch_max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.batch_max_bytes = batch_max_bytes
        self._clock = clock
        self.inflight_bytes = 0
        self.delivered_bytes = 0
        self._queued = 0.0  # bytes not yet through the link (a fluid model)
        self._queued_at = clock()
        self._rates: deque[tuple[float, float]] = deque()
        self._rtts: deque[tuple[float, float]] = deque()

    # --- estimates ----------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """The link's rate (bytes/s): the largest delivery rate seen lately; 0 if unknown."""
        self._forget(self._rates, RATE_MEMORY_S)
        return max((r for _, r in self._rates), default=0.0)

    @property
    def rtt(self) -> float:
        """The base round trip (s): the smallest seen lately; 0 if unknown."""
        self._forget(self._rtts, RTT_MEMORY_S)
        return min((r for _, r in self._rtts), default=0.0)

    @property
    def bdp(self) -> float:
        return self.rate * self.rtt

    def batch_bytes(self) -> int:
        """How large a backlog request should be now."""
        rate = self.rate
        if rate <= 0:
            return min(INITIAL_BATCH_BYTES, self.batch_max_bytes)
        want = max(BATCH_BDP * rate * self.rtt, BATCH_MIN_S * rate, BATCH_FLOOR_BYTES)
        return int(min(want, self.batch_max_bytes))

    def window_bytes(self) -> int:
        """Bytes that may await replies; never less than two requests (one on the wire while
        the reply to the other comes back)."""
        batch = self.batch_bytes()
        if self.rate <= 0:
            return 2 * batch
        return int(max(WINDOW_GAIN * self.bdp, 2 * batch))

    def has_room(self) -> bool:
        """May another backlog request go? (Live requests do not ask.)"""
        return self.inflight_bytes < self.window_bytes() - self.batch_bytes() // 2

    def deadline_s(self, ticket: Ticket, reply_timeout_s: float) -> float:
        """How long to wait for the reply: the hub's share plus what the link needs."""
        rate = self.rate or FLOOR_RATE
        return reply_timeout_s + 2.0 * ticket.ahead / rate + 2.0 * self.rtt

    # --- events -------------------------------------------------------------------------

    def queued_bytes(self) -> float:
        """Bytes sent but (by the model) not yet through the link."""
        now = self._clock()
        drained = self.rate * (now - self._queued_at)
        self._queued = min(max(0.0, self._queued - drained), float(self.inflight_bytes))
        self._queued_at = now
        return self._queued

    def sent(self, size: int) -> Ticket:
        queued = self.queued_bytes()
        self.inflight_bytes += size
        self._queued = queued + size
        return Ticket(size, self._clock(), self.delivered_bytes, int(self._queued))

    def answered(self, ticket: Ticket) -> None:
        """A reply came: one rate sample and one round-trip sample."""
        now = self._clock()
        self.inflight_bytes = max(0, self.inflight_bytes - ticket.size)
        self.delivered_bytes += ticket.size
        elapsed = max(now - ticket.sent_s, 1e-6)
        self._rates.append((now, (self.delivered_bytes - ticket.delivered_at_send) / elapsed))
        serialise = ticket.ahead / self.rate
        self._rtts.append((now, max(elapsed - serialise, 1e-4)))
        self.queued_bytes()  # answered bytes are no longer queued

    def lost(self, ticket: Ticket) -> None:
        """No reply (a time-out or a lost connection): the bytes are out of flight and the rate
        is measured afresh (the link may have slowed down)."""
        self.inflight_bytes = max(0, self.inflight_bytes - ticket.size)
        self._rates.clear()

    def _forget(self, samples: deque[tuple[float, float]], memory_s: float) -> None:
        cutoff = self._clock() - memory_s
        while len(samples) > 1 and samples[0][0] < cutoff:
            samples.popleft()
