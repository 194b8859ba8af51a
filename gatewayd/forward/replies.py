"""What each reply code does to the rows of the request it answers.

- 200: the request's rows are deleted, exactly those.
- 1008/1204/1206/1220 (the content is refused): the batch is split in halves until the samples
  that cause it are alone; the rest is delivered. Those go to the `rejected` table with the code
  and message on evidence that the refusal is the data's and not a hub refusing everything for
  a while (refusal_evidence.py): one bad sample never holds the queue hostage. Short of that
  evidence, one lone refused sample is held aside while the others flow, and asked again once
  the hub takes a later request (held_refusal.py); more is a storm: the samples stay queued and
  the loop backs off as after any failure.
- 1212 (a sub-device is not online through this gateway): the topology is repaired (get, add,
  login) and the batch re-sent; if that still fails, splitting finds the devices that cause it,
  which are parked: their samples stay queued while every other device's flow. A device back
  from a park gets no repair (its retry just logged it in): a further 1212 parks it for longer.
- anything else, no reply in time, or a dropped connection: nothing is deleted, and the loop is
  told to rewind (see gatewayd/forward/loop.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

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
from gatewayd.forward.content_verdicts import ContentVerdicts, SetAside
from gatewayd.forward.held_refusal import Held, HeldRefusal
from gatewayd.forward.refusal_evidence import (
    UNSET,
    HubStorm,
    Probe,
    RefusalRuns,
    StormLog,
)
from gatewayd.forward.window import LinkWindow
from gatewayd.logs import clip
from gatewayd.model import QueuedSample
from gatewayd.queue.store import SampleQueue

log = logging.getLogger(__name__)

#: The code of a sample dead-lettered by gatewayd itself, never sent (the hub's codes are > 0).
REJECTED_LOCALLY = 0


def request_bytes(elements: list[str]) -> int:
    """The size of the batch request these elements make, envelope included (an upper bound)."""
    return BATCH_ENVELOPE_BYTES + sum(len(e.encode("utf-8")) + 1 for e in elements)


class ReplyHandler(ContentVerdicts):
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
        #: Failures ever: a 200 resets `failures` only if its request went after the last one
        #: (a live request answered while the backlog's requests fail is no sign of health).
        self.failure_serial = 0
        #: Bytes in flight, the link's rate and round trip; sets each request's deadline.
        self.window = LinkWindow(forward.batch_max_bytes)
        self.rewind = False  # the loop must start again from the oldest row
        #: The loop must look at every row again at once, no backoff (refusals set aside).
        self.resend = False
        self.delivered = 0
        self.rejected = 0
        #: Replies by code ("timeout" and "no_connection" for the requests that got none).
        self.replies: dict[str, int] = {}
        #: Set whenever samples leave the queue (delivered or dead-lettered).
        self.progress = asyncio.Event()
        #: Requests sent so far: a 200 is evidence about a refusal by the order of sending.
        self.sent_serial = 0
        #: Batches whose refusals were put down to the hub (see HubStorm), logged once a series.
        self.storm_log = StormLog()
        #: The monotonic clock (tests step it), and the runs of refusals of lone samples with
        #: no 200 and no outage in between (refusal_evidence.py, rule 2).
        self.clock: Callable[[], float] = time.monotonic
        self.runs = RefusalRuns()
        #: The one lone refused sample held aside with no evidence yet (held_refusal.py), and
        #: those a 200 made due to be asked again (by the request that got the 200).
        self.holding = HeldRefusal(forward.retry_max_s)
        self._due: list[Held] = []

    @property
    def storms(self) -> int:
        return self.storm_log.count

    async def send(self, rows: list[QueuedSample], elements: list[str], method: str) -> None:
        """Deliver one batch, then the held sample its 200 made due; failures are counted and
        logged, never raised."""
        await self._deliver(rows, elements, method, False)
        await self._ask_due_again()  # not on cancellation (shutdown): the hold is in memory

    async def _deliver(
        self, rows: list[QueuedSample], elements: list[str], method: str, confirming: bool
    ) -> None:
        """`confirming`: a held sample asked again, alone (a refusal is believed at once)."""
        try:
            if len(rows) == 1 and request_bytes(elements) > self.cfg.batch_max_bytes:
                await self._too_large(rows[0], request_bytes(elements))
                return
            with self.runs.watching(Probe(confirming=confirming)) as probe:
                await self._send_and_settle(rows, method, elements, False, probe)
                await self._conclude(probe, method)
        except SetAside:
            self.resend = True
        except HubStorm as exc:
            self.holding.release()  # back to the flow with the others, after the backoff
            self.storm_log.storm(exc)
            await self._failed([row.id for row in rows], None)
        except (UplinkDown, ReplyTimeout) as exc:
            self.runs.end(self.clock())  # no reply is no refusal: a run of refusals ends here
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
        await self.queue.reject(
            [row.id], REJECTED_LOCALLY, message, {(row.product_key, row.device_key)}
        )
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
    ) -> tuple[Reply, int]:
        """Send one request; its reply, and its send serial."""
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
        ticket = self.window.sent(len(payload))
        self.runs.sending(self.session.connections, self.clock())
        self.sent_serial += 1
        serial = self.sent_serial
        deadline_s = self.window.deadline_s(ticket, self.cfg.reply_timeout_s)
        answered = False
        try:
            reply = await self.session.request(self.topics[method], request_id, payload, deadline_s)
            answered = True
        except ReplyTimeout:
            self._count("timeout")
            raise
        except UplinkDown:
            self._count("no_connection")
            raise
        finally:
            (self.window.answered if answered else self.window.lost)(ticket)
        self._count(str(reply.code))
        if not reply.ok:
            log.warning(
                "batch_refused id=%s method=%s code=%d message=%r samples=%d",
                request_id,
                method,
                reply.code,
                clip(reply.message),
                len(rows),
            )
        return reply, serial

    def _count(self, outcome: str) -> None:
        self.replies[outcome] = self.replies.get(outcome, 0) + 1

    async def _send_and_settle(
        self,
        rows: list[QueuedSample],
        method: str,
        elements: list[str] | None,
        repaired: bool,
        probe: Probe,
    ) -> None:
        failures_before = self.failure_serial
        logins_seen = self.topology.login_rounds
        reply, serial = await self._request(rows, method, elements)
        ids = [row.id for row in rows]
        if reply.ok:
            self.runs.accepted(serial, self.clock())
            self._due += self.holding.due(serial)
            await self.queue.ack(ids)
            if self.topology.has_park_history:
                self.topology.confirmed({(r.product_key, r.device_key) for r in rows})
            self.delivered += len(ids)
            if self.failure_serial == failures_before:
                self.failures = 0
            self.storm_log.accepted()
            self.progress.set()
        elif reply.code in CONTENT_CODES:
            if probe.refused_serial == UNSET:
                probe.refused_serial, probe.refused_at = serial, self.clock()
            if len(rows) == 1:
                probe.lone_serial = serial
                await self._refused_alone(rows[0], reply, probe, serial, method)
            else:
                await self._split(rows, method, repaired, probe)
        elif reply.code == CODE_NO_SUB_DEVICE_PERMISSION:
            await self._no_permission(rows, method, repaired, probe, logins_seen)
        else:
            await self._failed(ids, reply.code)

    async def _split(
        self, rows: list[QueuedSample], method: str, repaired: bool, probe: Probe
    ) -> None:
        half = len(rows) // 2
        for part in (rows[:half], rows[half:]):
            # A device parked by an earlier half (1212) is not asked again in this bisection:
            # its rows stay queued for its retry (an adversary saw hundreds of requests a round).
            part = [r for r in part if self.topology.sendable((r.product_key, r.device_key))]
            if part:
                await self._send_and_settle(part, method, None, repaired, probe)

    async def _no_permission(
        self, rows: list[QueuedSample], method: str, repaired: bool, probe: Probe, logins: int
    ) -> None:
        """1212: repair the topology (unless its devices were logged in since the request went,
        `logins`) and send again, once; a 1212 after that parks the device that causes it. No
        repair if every device in it was parked since the hub last took its data: its retry
        has just logged it in, and the hub is refusing anyway."""
        devices = {(r.product_key, r.device_key) for r in rows}
        if not repaired and self.topology.repair_may_help(devices):
            await self.topology.repair(devices, logins)
            still = [r for r in rows if self.topology.sendable((r.product_key, r.device_key))]
            if still:
                await self._send_and_settle(still, method, None, True, probe)
            return
        if len(devices) == 1:
            reason = "1212 after topology repair" if repaired else "1212 again after its park"
            self.topology.park(devices.pop(), reason)
            return
        await self._split(rows, method, True, probe)

    async def _failed(self, ids: list[int], code: int | None) -> None:
        self.mark_failed()
        try:
            await self.queue.record_failure(ids, code)
        except QueueError as exc:  # the rows stay queued either way; only the count is lost
            log.error("forward_count_failed error=%r", str(exc))

    def mark_failed(self) -> None:
        self.failures += 1
        self.failure_serial += 1
        self.rewind = True
