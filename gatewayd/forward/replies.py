"""What each reply code does to the rows of the request it answers.

- 200: the request's rows are deleted, exactly those.
- 1008/1204/1206/1220 (the content is refused): the batch is split in halves until the samples
  that cause it are alone; those go to the `rejected` table with the code and message, and the
  rest is delivered. One bad sample never holds the queue hostage.
- 1212 (a sub-device is not online through this gateway): the topology is repaired (get, add,
  login) and the batch re-sent; if that still fails, splitting finds the devices that cause it,
  which are parked: their samples stay queued while every other device's flow.
- anything else, no reply in time, or a dropped connection: nothing is deleted, and the loop is
  told to rewind (see gatewayd/forward/loop.py).
"""

from __future__ import annotations

import asyncio
import logging

from gatewayd.config import ForwardConfig
from gatewayd.enos.client import MqttSession
from gatewayd.enos.protocol import (
    BATCH_ENVELOPE_BYTES,
    CODE_NO_SUB_DEVICE_PERMISSION,
    CONTENT_CODES,
    Reply,
    batch_element,
    batch_request,
)
from gatewayd.enos.topology import Topology
from gatewayd.errors import QueueError, ReplyTimeout, UplinkDown
from gatewayd.model import QueuedSample
from gatewayd.queue.store import SampleQueue

log = logging.getLogger(__name__)


#: The code of a sample dead-lettered by gatewayd itself, never sent (the hub's codes are > 0).
REJECTED_LOCALLY = 0


def request_bytes(elements: list[str]) -> int:
    """The size of the batch request these elements make, envelope included (an upper bound)."""
    return BATCH_ENVELOPE_BYTES + sum(len(e.encode("utf-8")) + 1 for e in elements)


class ReplyHandler:
    """Sends one request and acts on its reply: delete, bisect, dead-letter, park or retry."""

    def __init__(
        self,
        queue: SampleQueue,
        session: MqttSession,
        topology: Topology,
        forward: ForwardConfig,
        topics: dict[str, str],
    ) -> None:
        self.queue = queue
        self.session = session
        self.topology = topology
        self.cfg = forward
        self.topics = topics
        self.failures = 0  # consecutive failed requests; the loop's backoff grows with it
        self.rewind = False  # the loop must start again from the oldest row
        self.delivered = 0
        self.rejected = 0
        #: Replies by code ("timeout" and "no_connection" for the requests that got none).
        self.replies: dict[str, int] = {}
        #: Set whenever samples leave the queue (delivered or dead-lettered).
        self.progress = asyncio.Event()

    async def send(self, rows: list[QueuedSample], elements: list[str], method: str) -> None:
        """Deliver one batch; failures are counted and logged, never raised."""
        try:
            if len(rows) == 1 and request_bytes(elements) > self.cfg.batch_max_bytes:
                await self._too_large(rows[0], request_bytes(elements))
                return
            await self._deliver(rows, method, elements, repaired=False)
        except (UplinkDown, ReplyTimeout) as exc:
            log.warning("batch_unconfirmed reason=%r samples=%d", str(exc), len(rows))
            await self._failed([row.id for row in rows], None)
        except QueueError as exc:
            log.error("batch_queue_error error=%r", str(exc))
            self.mark_failed()

    async def _too_large(self, row: QueuedSample, size: int) -> None:
        """A sample that cannot fit a request alone would make the broker drop the connection
        at every attempt, and hold every other device behind it: it is dead-lettered unsent."""
        message = (
            f"sample needs a request of {size} bytes, over forward.batch_max_bytes="
            f"{self.cfg.batch_max_bytes}; not sent"
        )
        await self.queue.reject([row.id], REJECTED_LOCALLY, message)
        self.rejected += 1
        self.progress.set()
        log.error(
            "sample_too_large id=%d device=%s/%s ts_ms=%d bytes=%d max_bytes=%d"
            " action=dead_lettered",
            row.id,
            row.product_key,
            row.device_key,
            row.ts_ms,
            size,
            self.cfg.batch_max_bytes,
        )

    async def _request(
        self, rows: list[QueuedSample], method: str, elements: list[str] | None
    ) -> Reply:
        if elements is None:
            elements = [batch_element(row) for row in rows]
        request_id = self.session.next_id()
        payload = batch_request(
            request_id,
            method,
            elements,
            allow_offline_sub_device=self.cfg.allow_offline_sub_device,
            skip_invalid_measurepoints=self.cfg.skip_invalid_measurepoints,
        )
        try:
            reply = await self.session.request(
                self.topics[method], request_id, payload, self.cfg.reply_timeout_s
            )
        except ReplyTimeout:
            self._count("timeout")
            raise
        except UplinkDown:
            self._count("no_connection")
            raise
        self._count(str(reply.code))
        if not reply.ok:
            log.warning(
                "batch_refused id=%s method=%s code=%d message=%r samples=%d",
                request_id,
                method,
                reply.code,
                reply.message,
                len(rows),
            )
        return reply

    def _count(self, outcome: str) -> None:
        self.replies[outcome] = self.replies.get(outcome, 0) + 1

    async def _deliver(
        self, rows: list[QueuedSample], method: str, elements: list[str] | None, repaired: bool
    ) -> None:
        reply = await self._request(rows, method, elements)
        ids = [row.id for row in rows]
        if reply.ok:
            await self.queue.ack(ids)
            if self.topology.has_park_history:
                self.topology.confirmed({(r.product_key, r.device_key) for r in rows})
            self.delivered += len(ids)
            self.failures = 0
            self.progress.set()
        elif reply.code in CONTENT_CODES:
            if len(rows) == 1:
                await self.queue.reject(ids, reply.code, reply.message)
                self.rejected += 1
                self.progress.set()
                log.warning(
                    "sample_rejected id=%d device=%s/%s ts_ms=%d code=%d message=%r",
                    rows[0].id,
                    rows[0].product_key,
                    rows[0].device_key,
                    rows[0].ts_ms,
                    reply.code,
                    reply.message,
                )
            else:
                await self._split(rows, method, repaired)
        elif reply.code == CODE_NO_SUB_DEVICE_PERMISSION:
            await self._no_permission(rows, method, repaired)
        else:
            await self._failed(ids, reply.code)

    async def _split(self, rows: list[QueuedSample], method: str, repaired: bool) -> None:
        half = len(rows) // 2
        await self._deliver(rows[:half], method, None, repaired)
        await self._deliver(rows[half:], method, None, repaired)

    async def _no_permission(self, rows: list[QueuedSample], method: str, repaired: bool) -> None:
        if not repaired:
            await self.topology.repair()
            still = [r for r in rows if self.topology.sendable((r.product_key, r.device_key))]
            if still:
                await self._deliver(still, method, None, repaired=True)
            return
        devices = {(r.product_key, r.device_key) for r in rows}
        if len(devices) == 1:
            self.topology.park(devices.pop(), "1212 after topology repair")
            return
        await self._split(rows, method, repaired)

    async def _failed(self, ids: list[int], code: int | None) -> None:
        self.mark_failed()
        try:
            await self.queue.record_failure(ids, code)
        except QueueError as exc:  # the rows stay queued either way; only the count is lost
            log.error("forward_count_failed error=%r", str(exc))

    def mark_failed(self) -> None:
        self.failures += 1
        self.rewind = True
