"""How many bytes may await replies at once, sized by the link instead of by a count.

A fixed count of requests in flight is right on one link only. Four requests of ~150 KB are a
few milliseconds of loopback but 20 s of a 256 kbit/s cellular uplink: the last one's reply
then comes after `reply_timeout_s` although the hub stored it, its rows are sent again, and
the link carries duplicates while the backlog waits (issue 18's re-send loop).

So the window is measured, as TCP's BBR does for packets: every reply gives a delivery-rate
sample and a round-trip sample. A request's own delivery rate is the bytes answered while it was
out over the time since the reply before it was sent (BBR's ack-elapsed: over the time since it
was sent alone, a small live request sent while a big one ahead was half on the wire counted
that one's bytes in a shorter time, and read up to 2x the link). It counts the round trip as
if it were link time, so it reads low whenever the window is not yet a BDP (and the window is
sized from it: it would never grow).
The rate sample is therefore taken between replies too: over the longest run of recent replies
whose requests were all sent before the reply that opens the run came (the link had their
bytes all along), bytes answered over the time between the first and the last reply. The
round-trip sample is the time the request was out less its own bytes' time at the rate: an
upper bound (it includes any wait behind other requests), exact for a request that went out
onto an idle link, as the first ones do and live ones between drains do. The samples are kept
(the best of each second, RTT_MEMORY_S long) and their minimum worked out again at the rate
known at each reply, so the first requests, answered before the rate was known, still count;
the minimum is kept long, so a drain's own queue, which would grow the window that grows the
queue, does not creep in. A windowed maximum of the rates is the link's rate, a windowed minimum of the round trips its
base round trip, their product the bandwidth-delay product (BDP). Then:

- backlog bytes in flight stay under WINDOW_GAIN x BDP (or a BDP and a request) plus one
  request: the pipe stays full, and the queue behind it holds about a round trip of bytes, so a live request queued behind it waits
  about a round trip, not the many seconds a count-based window allowed;
- a backlog request carries about half a BDP, but at least what the link moves in
  BATCH_MIN_S (so a fast link is not split into tiny requests) and at most batch_max_bytes;
- a request's reply deadline is `reply_timeout_s` (the hub's share) plus twice the time the
  bytes ahead of it and its own need at the measured rate, plus two round trips: a slow link
  never times out a request the hub is handling.

Until the first replies come in, the window is INITIAL_BATCH_BYTES x 2, and deadlines assume
FLOOR_RATE. A request that got no reply clears the rate samples (the link may have slowed).
Pure logic: the clock is injected; batches.py and replies.py call it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: Bytes in flight allowed, in BDPs.
WINDOW_GAIN = 1.25
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
#: Replies looked back over for a rate sample between replies, and the shortest span used
#: (replies handed over together by the network thread would read as an infinite rate).
RUN_REPLIES = 16
RUN_MIN_S = 0.005
#: How long rate samples (maximum) and round-trip samples (minimum) are remembered.
RATE_MEMORY_S = 10.0
RTT_MEMORY_S = 300.0


@dataclass
class Ticket:
    """One published request, as the window saw it go."""

    size: int
    sent_s: float
    delivered_at_send: int  # the window's delivered bytes when it went
    since_s: float  # the last reply before it went (its send time if none, or idle)
    ahead_s: float  # the bytes in flight when it went (its own included) at the rate then


class LinkWindow:
    """Bytes in flight, the link's rate and round trip as measured from replies."""

    def __init__(self, batch_max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.batch_max_bytes = batch_max_bytes
        self._clock = clock
        self.inflight_bytes = 0
        self.delivered_bytes = 0
        self._rates: deque[tuple[float, float]] = deque()
        #: (second, time out, size) of the request with the least time out net of its own
        #: bytes' time in each second of the last RTT_MEMORY_S.
        self._rtts: deque[tuple[int, float, int]] = deque()
        self._rtt = 0.0
        #: (answered at, size, sent at) of the last RUN_REPLIES replies.
        self._answers: deque[tuple[float, int, float]] = deque(maxlen=RUN_REPLIES)
        self._last_answer_s: float | None = None

    # --- estimates ----------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """The link's rate (bytes/s): the largest delivery rate seen lately; 0 if unknown."""
        self._forget(self._rates, RATE_MEMORY_S)
        return max((r for _, r in self._rates), default=0.0)

    @property
    def rtt(self) -> float:
        """The base round trip (s): the smallest seen lately; 0 if unknown."""
        return self._rtt

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
        """Bytes in flight up to which another backlog request may go (so at most one request
        more than this): WINDOW_GAIN BDPs, or a BDP and a request if more."""
        batch = self.batch_bytes()
        if self.rate <= 0:
            return 2 * batch
        return int(max(WINDOW_GAIN * self.bdp, self.bdp + batch))

    def has_room(self) -> bool:
        """May another backlog request go? (Live requests do not ask.)"""
        return self.inflight_bytes < self.window_bytes()

    def deadline_s(self, ticket: Ticket, reply_timeout_s: float) -> float:
        """How long to wait for the reply: the hub's share plus what the link needs."""
        return reply_timeout_s + 2.0 * ticket.ahead_s + 2.0 * self.rtt

    # --- events -------------------------------------------------------------------------

    def sent(self, size: int) -> Ticket:
        now = self._clock()
        last = self._last_answer_s
        # Onto an idle link, nothing ahead can be counted in its time: its own time out.
        since = now if last is None or self.inflight_bytes == 0 else last
        self.inflight_bytes += size
        ahead_s = self.inflight_bytes / (self.rate or FLOOR_RATE)
        return Ticket(size, now, self.delivered_bytes, since, ahead_s)

    def answered(self, ticket: Ticket) -> None:
        """A reply came: a rate sample or two, and (once the rate is known) a round trip."""
        now = self._clock()
        self.inflight_bytes = max(0, self.inflight_bytes - ticket.size)
        self.delivered_bytes += ticket.size
        elapsed = max(now - ticket.sent_s, 1e-6)
        answered_s = max(now - ticket.since_s, 1e-6)
        self._rates.append((now, (self.delivered_bytes - ticket.delivered_at_send) / answered_s))
        self._last_answer_s = now
        self._answers.append((now, ticket.size, ticket.sent_s))
        between = self._rate_between_replies(now)
        if between > 0:
            self._rates.append((now, between))
        self._round_trip(now, elapsed, ticket.size)

    def _round_trip(self, now: float, elapsed: float, size: int) -> None:
        """Keep the sample, and work the minimum out again at the rate known now: a request
        that went out onto an idle link before the rate was known is the best sample there is."""
        rate = self.rate
        second = int(now)

        def net(sample: tuple[int, float, int]) -> float:
            return sample[1] - sample[2] / rate if rate > 0 else sample[1]

        sample = (second, elapsed, size)
        if self._rtts and self._rtts[-1][0] == second:
            if net(sample) < net(self._rtts[-1]):
                self._rtts[-1] = sample
        else:
            self._rtts.append(sample)
        while self._rtts and self._rtts[0][0] < now - RTT_MEMORY_S:
            self._rtts.popleft()
        if rate > 0:
            self._rtt = max(min(net(s) for s in self._rtts), 1e-4)

    def _rate_between_replies(self, now: float) -> float:
        """Bytes over time across the longest run of replies that kept the link fed; 0: none."""
        answers = list(self._answers)
        total = answers[-1][1]
        latest_send = answers[-1][2]
        sample = 0.0
        for answered_s, size, sent_s in reversed(answers[:-1]):
            if latest_send > answered_s:
                break  # a request of the run went after this reply: the link may have idled
            if now - answered_s >= RUN_MIN_S:
                sample = total / (now - answered_s)
            total += size
            latest_send = max(latest_send, sent_s)
        return sample

    def lost(self, ticket: Ticket) -> None:
        """No reply (a time-out or a lost connection): the bytes are out of flight and the rate
        is measured afresh (the link may have slowed down)."""
        self.inflight_bytes = max(0, self.inflight_bytes - ticket.size)
        self._rates.clear()
        self._answers.clear()

    def _forget(self, samples: deque[tuple[float, float]], memory_s: float) -> None:
        cutoff = self._clock() - memory_s
        while len(samples) > 1 and samples[0][0] < cutoff:
            samples.popleft()
