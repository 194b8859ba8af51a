"""The drain loop: queue rows to batch requests, and the replies back to deletions.

Live before backfill: samples younger than `live_max_age_s` (give or take the one-second step
of the boundary) go as `thing.measurepoint.post.batch` (the hub runs alerts on them), older ones
as `thing.measurepoint.resume.batch`. Each round first looks at
the newest rows (a cheap scan from the end of the table) and sends the young ones; the
backlog drains oldest first behind a cursor (row ids only grow) in the remaining capacity. Up to
`forward.inflight` requests await replies at once; batches are bounded by samples and bytes.

What a reply does is in gatewayd/forward/replies.py. After a failure (anything but a reply
that settles the rows) the loop lets the other in-flight requests finish, waits a capped,
jittered, growing delay, and starts again from the oldest row still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from gatewayd.forward.replies import ReplyHandler
from gatewayd.model import QueuedSample
from gatewayd.queue.store import SampleQueue
from gatewayd.runtime.watchdog import Pulse

log = logging.getLogger(__name__)

IDLE_RECHECK_S = 1.0
AGE_STEP_MS = 1000


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
        self._window = asyncio.Semaphore(forward.inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation = topology.generation
        #: Queue rows read to build requests (sent or skipped): what skipping parked rows costs.
        self.rows_read = 0
        #: Jumps over rows of parked or disabled devices (see _skip_held_back).
        self.skips = 0
        self.handler = ReplyHandler(queue, session, topology, forward, self.topics)
        #: Set whenever samples leave the queue (delivered or dead-lettered).
        self.progress = self.handler.progress
        #: Beats every round; waits on the hub or the topology are idle (runtime/watchdog.py).
        self.pulse = Pulse("forwarder")

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
            with self.pulse.idle():
                await self._window.acquire()
            try:
                batch = await self._next_batch()
            except QueueError as exc:
                self._window.release()
                log.error("forward_queue_error error=%r", str(exc))
                self._mark_failed()
                continue
            if batch is None:
                self._window.release()
                continue
            rows, elements, method = batch
            self._inflight_ids.update(row.id for row in rows)
            task = asyncio.create_task(self._send(rows, elements, method))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _eligible(self, row: QueuedSample) -> bool:
        return row.id not in self._inflight_ids and self.topology.sendable(
            (row.product_key, row.device_key)
        )

    async def _next_batch(self) -> tuple[list[QueuedSample], list[str], str] | None:
        """The next request to send: young rows first, else the oldest rows; None when idle."""
        limit = self.cfg.batch_max_samples
        young_after = self._young_after()
        if self.cfg.live_max_age_s > 0:
            newest = await self.queue.fetch_newest(self._live_cursor, limit)
            self.rows_read += len(newest)
            if newest:
                self._live_cursor = max(self._live_cursor, newest[0].id)
                live = [r for r in reversed(newest) if r.ts_ms >= young_after and self._eligible(r)]
                if live:
                    rows, elements = pack_batch(live, self.cfg.batch_max_bytes)
                    return rows, elements, METHOD_POST_BATCH
        # Clear before reading: a commit that lands after the read sets the event again.
        self.queue.new_data.clear()
        fetched = await self.queue.fetch_after(self._cursor, limit)
        self.rows_read += len(fetched)
        if not fetched:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_RECHECK_S):
                    await self.queue.new_data.wait()
            return None
        candidates = [r for r in fetched if self._eligible(r)]
        if not candidates:
            self._cursor = await self._skip_held_back(fetched)
            return None
        young = candidates[0].ts_ms >= young_after
        same_kind = []
        for row in candidates:
            if (row.ts_ms >= young_after) != young:
                break
            same_kind.append(row)
        rows, elements = pack_batch(same_kind, self.cfg.batch_max_bytes)
        self._cursor = rows[-1].id
        return rows, elements, METHOD_POST_BATCH if young else METHOD_RESUME_BATCH

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

    async def _send(self, rows: list[QueuedSample], elements: list[str], method: str) -> None:
        try:
            await self.handler.send(rows, elements, method)
        finally:
            self._inflight_ids.difference_update(row.id for row in rows)
            self._window.release()

    def _mark_failed(self) -> None:
        self.handler.mark_failed()
