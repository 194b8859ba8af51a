"""The drain loop: queue rows to batch requests, and the replies back to deletions.

Rows are read oldest first behind a cursor (row ids only grow), packed into batches bounded by
sample count and bytes, and sent with up to `forward.inflight` requests awaiting replies. A 200
reply deletes exactly that request's rows. Anything else (another code, no reply in time, the
connection dropping) deletes nothing: the loop lets the other in-flight requests finish, waits a
capped, jittered, exponentially growing delay, and starts again from the oldest row still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from gatewayd.config import ForwardConfig, GatewayConfig
from gatewayd.enos.client import MqttSession
from gatewayd.enos.protocol import (
    BATCH_ENVELOPE_BYTES,
    METHOD_RESUME_BATCH,
    batch_element,
    batch_request,
    measurepoint_topic,
)
from gatewayd.errors import QueueError, ReplyTimeout, UplinkDown
from gatewayd.model import QueuedSample
from gatewayd.queue import SampleQueue

log = logging.getLogger(__name__)

IDLE_RECHECK_S = 1.0


def backoff_delay(failures: int, low: float, high: float, rand: Callable[[], float]) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(high, low * 2^(n-1))]."""
    ceiling = min(high, low * (2 ** max(0, failures - 1)))
    return ceiling * rand()


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
        forward: ForwardConfig,
        gateway: GatewayConfig,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.queue = queue
        self.session = session
        self.cfg = forward
        self.topic = measurepoint_topic(
            gateway.product_key, gateway.device_key, METHOD_RESUME_BATCH
        )
        self._rand = rand
        self._cursor = 0
        self._window = asyncio.Semaphore(forward.inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = 0
        self._rewind = False
        self.delivered = 0

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        """Forward until cancelled."""
        while True:
            await self.session.connected.wait()
            if self._rewind:
                await self._restart_from_oldest()
                continue
            try:
                rows = await self._next_rows()
            except QueueError as exc:
                log.error("forward_queue_error error=%r", str(exc))
                self._mark_failed()
                continue
            if not rows:
                continue
            batch, elements = pack_batch(rows, self.cfg.batch_max_bytes)
            await self._window.acquire()
            if self._rewind or not self.session.connected.is_set():
                self._window.release()
                continue
            self._cursor = batch[-1].id
            task = asyncio.create_task(self._send(batch, elements))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _next_rows(self) -> list[QueuedSample]:
        # Clear before reading: a commit that lands after the read sets the event again.
        self.queue.new_data.clear()
        rows = await self.queue.fetch_after(self._cursor, self.cfg.batch_max_samples)
        if not rows:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_RECHECK_S):
                    await self.queue.new_data.wait()
        return rows

    async def _restart_from_oldest(self) -> None:
        await self.wait_inflight()
        delay = backoff_delay(
            self._failures, self.cfg.retry_min_s, self.cfg.retry_max_s, self._rand
        )
        log.info("forward_retry_in delay_s=%.2f consecutive_failures=%d", delay, self._failures)
        await asyncio.sleep(delay)
        self._cursor = 0
        self._rewind = False

    async def wait_inflight(self, timeout_s: float | None = None) -> int:
        """Wait for requests awaiting replies; return how many were still unanswered at the limit."""
        pending = set(self._tasks)
        if not pending:
            return 0
        _done, still = await asyncio.wait(pending, timeout=timeout_s)
        return len(still)

    async def _send(self, batch: list[QueuedSample], elements: list[str]) -> None:
        ids = [row.id for row in batch]
        request_id = self.session.next_id()
        payload = batch_request(
            request_id,
            METHOD_RESUME_BATCH,
            elements,
            allow_offline_sub_device=self.cfg.allow_offline_sub_device,
            skip_invalid_measurepoints=self.cfg.skip_invalid_measurepoints,
        )
        try:
            reply = await self.session.request(
                self.topic, request_id, payload, self.cfg.reply_timeout_s
            )
            if reply.ok:
                await self.queue.ack(ids)
                self.delivered += len(ids)
                self._failures = 0
                log.debug("batch_delivered id=%s samples=%d", request_id, len(ids))
                return
            log.warning(
                "batch_refused id=%s code=%d message=%r samples=%d",
                request_id,
                reply.code,
                reply.message,
                len(ids),
            )
            await self._failed(ids, reply.code)
        except (UplinkDown, ReplyTimeout) as exc:
            log.warning(
                "batch_unconfirmed id=%s reason=%r samples=%d", request_id, str(exc), len(ids)
            )
            await self._failed(ids, None)
        except QueueError as exc:
            log.error("batch_queue_error id=%s error=%r", request_id, str(exc))
            self._mark_failed()
        finally:
            self._window.release()

    async def _failed(self, ids: list[int], code: int | None) -> None:
        self._mark_failed()
        try:
            await self.queue.record_failure(ids, code)
        except QueueError as exc:  # the rows stay queued either way; only the count is lost
            log.error("forward_count_failed error=%r", str(exc))

    def _mark_failed(self) -> None:
        self._failures += 1
        self._rewind = True
