"""The drain loop: queue rows to batch requests, and the replies back to deletions.

Live before backfill: samples younger than `live_max_age_s` (give or take the one-second step
of the boundary) go as `thing.measurepoint.post.batch` (the hub runs alerts on them), older ones
as `thing.measurepoint.resume.batch`. Each round first looks at the newest rows (a cheap scan
from the end of the table) and sends the young ones at once (up to LIVE_MAX_INFLIGHT requests;
they never wait for the backlog). With no backlog in flight, young rows found while a live
request awaits its reply wait for that reply, at most LIVE_HOLD_S, and then go together
(Nagle's rule: where the round trip is longer than the queue's commit interval, a request
carries a few commit groups instead of one group's couple of samples; on a fast link the reply
comes first and nothing waits). The backlog drains oldest first behind a cursor (row ids only
grow) while the window (forward/window.py: bytes in flight near twice what the link moves in a
round trip, measured from the replies) has room, in requests sized by the link, never more
than `forward.inflight` of them at once.

What a reply does is in gatewayd/forward/replies.py. After a failure (anything but a reply
that settles the rows) the loop lets the other in-flight requests finish, waits a capped,
jittered, growing delay, and starts again from the oldest row still queued.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from gatewayd.backoff import backoff_delay
from gatewayd.config import ForwardConfig, GatewayConfig
from gatewayd.enos.client import MqttSession
from gatewayd.enos.protocol import (
    BATCH_ENVELOPE_BYTES,
    METHOD_POST_BATCH,
    METHOD_RESUME_BATCH,
    batch_element,
    measurepoint_topic,
)
from gatewayd.enos.topology import Topology
from gatewayd.errors import QueueError
from gatewayd.forward.replies import ReplyHandler, request_bytes
from gatewayd.model import QueuedSample
from gatewayd.queue.store import SampleQueue
from gatewayd.runtime.watchdog import Pulse

log = logging.getLogger(__name__)

IDLE_RECHECK_S = 1.0
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


class Forwarder:
    """Drains the queue to the hub over one MQTT session."""

    def __init__(
        self,
        queue: SampleQueue,
        session: MqttSession,
        topology: Topology,
        forward: ForwardConfig,
        gateway: GatewayConfig,
        *,
        rand: Callable[[], float] = random.random,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.queue = queue
        self.session = session
        self.topology = topology
        self.cfg = forward
        self.topics = {
            method: measurepoint_topic(gateway.product_key, gateway.device_key, method)
            for method in (METHOD_POST_BATCH, METHOD_RESUME_BATCH)
        }
        self._rand = rand
        self._clock_ms = clock_ms
        self._cursor = 0  # the backlog: every row at or below it was looked at
        self._live_cursor = 0  # the newest row the live pass has seen
        self._inflight_ids: set[int] = set()
        self._live_inflight = 0
        self._live_bytes = 0  # request bytes of the live requests in flight
        #: Since when young rows have been held back (monotonic s; None: none held).
        self._held_since: float | None = None
        self._backlog_inflight = 0
        self._room = asyncio.Event()  # set whenever a request ends
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation = topology.generation
        #: Queue rows read to build requests (sent or skipped): what skipping parked rows costs.
        self.rows_read = 0
        #: Jumps over rows of parked or disabled devices (see _skip_held_back).
        self.skips = 0
        self.handler = ReplyHandler(queue, session, topology, forward, self.topics)
        #: Backlog bytes in flight and request sizes follow the link (forward/window.py).
        self.window = self.handler.window
        #: Set whenever samples leave the queue (delivered or dead-lettered).
        self.progress = self.handler.progress
        #: Beats every round; waits on the hub or the topology are idle (runtime/watchdog.py).
        self.pulse = Pulse("forwarder", waits_on=frozenset({"queue-writer"}))

    @property
    def delivered(self) -> int:
        return self.handler.delivered

    @property
    def rejected(self) -> int:
        return self.handler.rejected

    @property
    def storms(self) -> int:
        """Batches whose refusals were put down to the hub (see replies.py)."""
        return self.handler.storms

    @property
    def replies(self) -> dict[str, int]:
        """Replies by code ("timeout" and "no_connection" for the requests that got none)."""
        return self.handler.replies

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        """Forward until cancelled."""
        while True:
            self.pulse.beat()
            with self.pulse.idle():
                await self.topology.ready.wait()
            if self.handler.rewind:
                with self.pulse.idle():
                    await self._restart_from_oldest()
                continue
            if self.topology.generation != self._generation:
                self._generation = self.topology.generation
                self._cursor = self._live_cursor = 0  # parked rows may be sendable now
            # Cleared before reading: a commit or a reply after the reads wakes the wait below.
            self.queue.new_data.clear()
            self._room.clear()
            try:
                batch = await self._next_batch()
            except QueueError as exc:
                log.error("forward_queue_error error=%r", str(exc))
                self._mark_failed()
                continue
            if batch == IDLE:
                with self.pulse.idle():
                    await self._wait_for_work()
                continue
            if batch == AGAIN:
                continue
            assert isinstance(batch, tuple)
            rows, elements, method, live = batch
            self._inflight_ids.update(row.id for row in rows)
            task = asyncio.create_task(self._send(rows, elements, method, live))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _wait_for_work(self) -> None:
        """Until new rows are committed or a request ends (room in the window), at most
        IDLE_RECHECK_S."""
        waits = {
            asyncio.ensure_future(self.queue.new_data.wait()),
            asyncio.ensure_future(self._room.wait()),
        }
        held = self._hold_left_s()
        timeout = IDLE_RECHECK_S if held is None else min(IDLE_RECHECK_S, held)
        _done, pending = await asyncio.wait(
            waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in pending:
            waiter.cancel()

    def _eligible(self, row: QueuedSample) -> bool:
        return row.id not in self._inflight_ids and self.topology.sendable(
            (row.product_key, row.device_key)
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

    async def _restart_from_oldest(self) -> None:
        await self.wait_inflight()
        delay = backoff_delay(
            self.handler.failures, self.cfg.retry_min_s, self.cfg.retry_max_s, self._rand
        )
        log.info(
            "forward_retry_in delay_s=%.2f consecutive_failures=%d", delay, self.handler.failures
        )
        await asyncio.sleep(delay)
        self._cursor = self._live_cursor = 0
        self.handler.rewind = False

    async def wait_inflight(self, timeout_s: float | None = None) -> int:
        """Wait for requests awaiting replies; return how many were still unanswered at the limit."""
        pending = set(self._tasks)
        if not pending:
            return 0
        _done, still = await asyncio.wait(pending, timeout=timeout_s)
        return len(still)

    async def _send(
        self, rows: list[QueuedSample], elements: list[str], method: str, live: bool
    ) -> None:
        size = request_bytes(elements)
        if live:
            self._live_inflight += 1
            self._live_bytes += size
        else:
            self._backlog_inflight += 1
        try:
            await self.handler.send(rows, elements, method)
        finally:
            if live:
                self._live_inflight -= 1
                self._live_bytes -= size
            else:
                self._backlog_inflight -= 1
            self._inflight_ids.difference_update(row.id for row in rows)
            self._room.set()

    def _mark_failed(self) -> None:
        self.handler.mark_failed()
