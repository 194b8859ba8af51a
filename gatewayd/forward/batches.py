"""Which queued rows the next request carries, and as what: live before backfill.

Samples younger than `live_max_age_s` (give or take the one-second step of the boundary) go as
`thing.measurepoint.post.batch` (the hub runs alerts on them), older ones as
`thing.measurepoint.resume.batch`. Each round first looks at the newest rows (a cheap scan from
the end of the table) and sends the young ones at once (up to LIVE_MAX_INFLIGHT requests; they
never wait for the backlog). With no backlog in flight, young rows found while a live request
awaits its reply wait for that reply, at most LIVE_HOLD_S, and then go together (Nagle's rule:
where the round trip is longer than the queue's commit interval, a request carries a few commit
groups instead of one group's couple of samples; on a fast link the reply comes first and
nothing waits). The backlog drains oldest first behind a cursor (row ids only grow) while the
window (forward/window.py: bytes in flight near twice what the link moves in a round trip,
measured from the replies) has room, in requests sized by the link, never more than
`forward.inflight` of them at once. Rows of parked or disabled devices are stepped over, and a
long run of them jumped by the queue's device index; so is a lone refused sample held aside
while it waits for evidence (forward/held_refusal.py).

Apart from loop.py, which sends the requests, keeps the counts of those in flight (read here)
and starts again after a failure: this module only chooses. A mixin of loop.Forwarder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gatewayd.enos.protocol import (
    BATCH_ENVELOPE_BYTES,
    METHOD_POST_BATCH,
    METHOD_RESUME_BATCH,
    batch_element,
)
from gatewayd.model import QueuedSample

if TYPE_CHECKING:
    from gatewayd.config import ForwardConfig
    from gatewayd.enos.topology import Topology
    from gatewayd.forward.held_refusal import HeldRefusal
    from gatewayd.forward.window import LinkWindow
    from gatewayd.queue.writer import SampleQueue

AGE_STEP_MS = 1000
#: Live requests in flight at most (they do not count against the backlog's window); with
#: forward.inflight at its default of 4, paho's own limit of 20 unacknowledged messages.
LIVE_MAX_INFLIGHT = 16
#: Longest a young row waits for the live request ahead of it to be answered (see the module
#: docstring). Only with no backlog in flight: during a drain live requests already wait behind
#: the backlog's bytes, and their share of the link is small.
LIVE_HOLD_S = 0.5
#: rows, their batch elements, the method, and whether it went as a live request.
_Batch = tuple[list[QueuedSample], list[str], str, bool]
#: What _next_batch says instead of a batch: nothing to do until new rows or a reply come
#: (IDLE), or the cursor moved without sending (AGAIN: look again at once).
IDLE, AGAIN = "idle", "again"


def pack_batch(rows: list[QueuedSample], max_bytes: int) -> tuple[list[QueuedSample], list[str]]:
    """Take rows in order while the request stays within max_bytes; always at least one row."""
    budget = max_bytes - BATCH_ENVELOPE_BYTES
    elements: list[str] = []
    size = 0
    for row in rows:
        element = batch_element(row)
        cost = len(element.encode("utf-8")) + 1
        if elements and size + cost > budget:
            break
        elements.append(element)
        size += cost
    return rows[: len(elements)], elements


class BatchChooser:
    """The Forwarder's choice of its next request: the two cursors, the hold, the skips."""

    queue: SampleQueue
    topology: Topology
    cfg: ForwardConfig
    window: LinkWindow
    _clock_ms: Callable[[], int]
    # What is in flight, counted by loop.py as requests go and end.
    _inflight_ids: set[int]
    _live_inflight: int
    _live_bytes: int  # request bytes of the live requests in flight
    _backlog_inflight: int
    _holding: HeldRefusal  # the reply handler's held refused sample, skipped

    def _init_cursors(self) -> None:
        self._cursor = 0  # the backlog: every row at or below it was looked at
        self._live_cursor = 0  # the newest row the live pass has seen
        #: Since when young rows have been held back (monotonic s; None: none held).
        self._held_since: float | None = None
        #: Queue rows read to build requests (sent or skipped): what skipping parked rows costs.
        self.rows_read = 0
        #: Jumps over rows of parked or disabled devices (see _skip_held_back).
        self.skips = 0

    def _rewind(self) -> None:
        """Look at every queued row again, from the oldest."""
        self._cursor = self._live_cursor = 0

    def _eligible(self, row: QueuedSample) -> bool:
        return (
            row.id not in self._inflight_ids
            and not self._holding.skips(row.id)
            and self.topology.sendable((row.product_key, row.device_key))
        )

    async def _next_batch(self) -> _Batch | str:
        """The next request to send: young rows first (they never wait for the backlog's
        window), else the oldest rows if the window has room; or IDLE, or AGAIN."""
        limit = self.cfg.batch_max_samples
        young_after = self._young_after()
        holding = False
        if self.cfg.live_max_age_s > 0 and self._live_inflight < LIVE_MAX_INFLIGHT:
            newest = await self.queue.fetch_newest(self._live_cursor, limit)
            self.rows_read += len(newest)
            live = [r for r in reversed(newest) if r.ts_ms >= young_after and self._eligible(r)]
            holding = bool(live) and (self._hold_live() or self._live_window_full())
            if live and not holding:
                self._live_cursor = max(self._live_cursor, newest[0].id)
                # Sized by the link like the backlog: after an outage shorter than
                # live_max_age_s, every row queued meanwhile is young. The newest go; the older
                # ones left out go by the backlog path (in order, in the window).
                newest_first, elements = pack_batch(live[::-1], self.window.batch_bytes())
                return newest_first[::-1], elements[::-1], METHOD_POST_BATCH, True
            if newest and not live:
                self._live_cursor = max(self._live_cursor, newest[0].id)
        if self._backlog_inflight >= self.cfg.inflight or not self.window.has_room():
            return IDLE
        fetched = await self.queue.fetch_after(self._cursor, limit)
        self.rows_read += len(fetched)
        if not fetched:
            return IDLE
        candidates = [r for r in fetched if self._eligible(r)]
        if not candidates:
            self._cursor = await self._skip_held_back(fetched)
            return AGAIN
        young = candidates[0].ts_ms >= young_after
        if young and holding:
            return IDLE  # held young rows go by the live path, together
        same_kind = []
        for row in candidates:
            if (row.ts_ms >= young_after) != young:
                break
            same_kind.append(row)
        rows, elements = pack_batch(same_kind, self.window.batch_bytes())
        self._cursor = rows[-1].id
        return rows, elements, METHOD_POST_BATCH if young else METHOD_RESUME_BATCH, False

    def _live_window_full(self) -> bool:
        """One live request may always go; more only while live bytes in flight stay within
        the link's window (else they queue on the link ahead of the freshest readings)."""
        return self._live_inflight > 0 and self._live_bytes >= self.window.window_bytes()

    def _hold_live(self) -> bool:
        """Should young rows wait for the live request in flight (Nagle's rule)?"""
        if self._live_inflight == 0 or self._backlog_inflight > 0:
            self._held_since = None
            return False
        now = time.monotonic()
        if self._held_since is None:
            self._held_since = now
        if now - self._held_since >= LIVE_HOLD_S:
            self._held_since = None
            return False
        return True

    def _hold_left_s(self) -> float | None:
        """How long held rows may still wait; None if none are held."""
        if self._held_since is None:
            return None
        return max(0.0, LIVE_HOLD_S - (time.monotonic() - self._held_since))

    async def _skip_held_back(self, fetched: list[QueuedSample]) -> int:
        """Where the backlog cursor goes after a read that held nothing to send.

        If every row read belongs to a parked or disabled device, the rows after them may be
        millions more of the same (a device refused for a day ahead of a healthy backlog):
        the queue's device index jumps to the next row of any other device instead.
        """
        held = self.topology.unsendable()
        if len(fetched) < self.cfg.batch_max_samples:
            return fetched[-1].id  # the end of the queue: nothing beyond to jump over
        if not held or any((r.product_key, r.device_key) not in held for r in fetched):
            return fetched[-1].id  # rows in flight among them: just step over
        following = await self.queue.next_id_excluding(fetched[-1].id, held)
        if following is None:
            return fetched[-1].id  # nothing else queued; new rows come after the newest id
        self.skips += 1
        return following - 1

    def _young_after(self) -> int:
        """The time stamp from which a row counts as live, moved in whole steps of AGE_STEP_MS.

        A boundary that moved every millisecond let rows turn old one by one just as the backlog
        cursor reached them: each round sent only the few rows that had aged since the last one,
        as a resume batch of their own, and the young rows behind them waited until they aged too
        (a 10 M backlog drained at 1,000 samples/s, the rate its readings aged). With a boundary
        that stands still for a second, the cursor sends what aged and passes into the young rows.
        A row may thus go as live up to one step past `live_max_age_s`.
        """
        boundary = self._clock_ms() - int(self.cfg.live_max_age_s * 1000)
        return boundary - boundary % AGE_STEP_MS
