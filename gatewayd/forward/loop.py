"""The drain loop: queue rows to batch requests in flight, and the replies back to deletions.

Each round it waits for the topology, picks the next request (forward/batches.py: live before
backfill, the cursors, the hold), and sends it as a task of its own: young rows in up to
LIVE_MAX_INFLIGHT live requests, the backlog in at most `forward.inflight` requests while the
link's window (forward/window.py) has room. With nothing to send it waits for new rows or for
a request to end, at most IDLE_RECHECK_S.

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
from gatewayd.enos.protocol import METHOD_POST_BATCH, METHOD_RESUME_BATCH, measurepoint_topic
from gatewayd.enos.topology import Topology
from gatewayd.errors import QueueError
from gatewayd.forward.batches import AGAIN, IDLE, BatchChooser
from gatewayd.forward.replies import ReplyHandler, request_bytes
from gatewayd.model import QueuedSample
from gatewayd.queue.store import SampleQueue
from gatewayd.runtime.watchdog import Pulse

log = logging.getLogger(__name__)

IDLE_RECHECK_S = 1.0


class Forwarder(BatchChooser):
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
        self._init_cursors()
        self._inflight_ids: set[int] = set()
        self._live_inflight = 0
        self._live_bytes = 0
        self._backlog_inflight = 0
        self._room = asyncio.Event()  # set whenever a request ends
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation = topology.generation
        self.handler = ReplyHandler(queue, session, topology, forward, self.topics)
        self._holding = self.handler.holding
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
            if self._holding.release_stale(self.handler.clock()):
                self._rewind()  # held with no evidence for long: back to the flow
            if self.handler.rewind:
                with self.pulse.idle():
                    await self._restart_from_oldest()
                continue
            if self.handler.resend:  # refusals were set aside: the rest goes again at once
                self.handler.resend = False
                self._rewind()
            if self.topology.generation != self._generation:
                self._generation = self.topology.generation
                self._rewind()  # parked rows may be sendable now
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

    async def _restart_from_oldest(self) -> None:
        await self.wait_inflight()
        delay = backoff_delay(
            self.handler.failures, self.cfg.retry_min_s, self.cfg.retry_max_s, self._rand
        )
        log.info(
            "forward_retry_in delay_s=%.2f consecutive_failures=%d", delay, self.handler.failures
        )
        await asyncio.sleep(delay)
        self._rewind()
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
