"""The verdict on samples the hub refused for their content, once each is alone.

Apart from replies.py, which sends a request and acts on its reply code: this is the one branch
that needs the evidence (refusal_evidence.py) and the held sample (held_refusal.py), and it is
where a good sample could be lost to the dead-letter table by a wrong call, so it reads on its
own: dead-letter on evidence, hold one sample aside without it, call anything more a storm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gatewayd.enos.protocol import Reply, batch_element
from gatewayd.enos.topology import Topology
from gatewayd.forward.held_refusal import Held, HeldRefusal
from gatewayd.forward.refusal_evidence import Probe, RefusalRuns
from gatewayd.logs import clip
from gatewayd.model import QueuedSample
from gatewayd.queue.store import SampleQueue

log = logging.getLogger("gatewayd.forward.replies")  # the lines operators know by that name

#: Hub text kept with a dead-lettered sample is cut to this many characters.
HUB_TEXT_STORED_MAX = 2000


class SetAside(Exception):
    """The bisection's lone refusals were held aside: stop it; the batch's other rows are
    looked at again at once (no backoff: nothing says the hub refuses them)."""


class ContentVerdicts:
    """Mixed into ReplyHandler, which sets these and sends the requests."""

    queue: SampleQueue
    topology: Topology
    clock: Callable[[], float]
    runs: RefusalRuns
    holding: HeldRefusal
    _due: list[Held]
    rejected: int
    progress: asyncio.Event

    #: ReplyHandler's: one request and what its reply does; a batch sent and concluded.
    _send_and_settle: Callable[
        [list[QueuedSample], str, list[str] | None, bool, Probe], Awaitable[None]
    ]
    _deliver: Callable[[list[QueuedSample], list[str], str, bool], Awaitable[None]]

    async def _refused_alone(
        self, row: QueuedSample, reply: Reply, probe: Probe, serial: int, method: str
    ) -> None:
        """A lone sample refused for its content (its request's send serial): dead-letter it on
        the evidence that it is the data's fault; else hold it, and stop the bisection once it
        meets a second device."""
        evidence = self.runs.evidence(probe, reply, serial, self.clock())
        if evidence:
            await self._reject(row, reply, evidence)
            return
        probe.suspects.append((row, reply))
        if len(probe.devices()) > 1 and not await self._settle_persisting(probe):
            if self._hold(probe, method):
                raise SetAside  # the rest of the batch is looked at again at once, without them
            raise self.runs.storm(probe, self.clock(), "several devices, no 200 in between")

    async def _conclude(self, probe: Probe, method: str) -> None:
        """The bisection is over: decide on the suspects it left. If the hub took samples since,
        each is asked once more, alone (the refusal may have come just before a storm ended);
        if not, they are dead-lettered if the refusal persists, else it is a storm."""
        if not probe.suspects:
            return
        if probe.took_since():
            suspects, probe.suspects = probe.suspects, []
            confirm = Probe(confirming=True)
            for row, _ in suspects:
                await self._send_and_settle([row], method, None, False, confirm)
            return
        if await self._settle_persisting(probe):
            return
        if self._hold(probe, method):
            return
        note = "no 200 in between" if len(probe.suspects) > 1 else "another held, no 200 between"
        raise self.runs.storm(probe, self.clock(), note)

    def _hold(self, probe: Probe, method: str) -> bool:
        """Hold aside the bisection's lone refusals with no evidence (held_refusal.py): the
        others flow on, no backoff. False: a storm."""
        rows = [row for row, _ in probe.suspects]
        if not self.holding.hold(rows, method, probe.lone_serial, self.clock()):
            return False
        for row, reply in probe.suspects:
            log.debug(
                "refused_sample_held id=%d device=%s/%s code=%d action='asked again alone once"
                " the hub takes a request sent after it; other samples flow'",
                row.id,
                row.product_key,
                row.device_key,
                reply.code,
            )
        probe.suspects = []
        return True

    async def _ask_due_again(self) -> None:
        """Ask the held samples a 200 made due once more, each alone (refused again: the data's
        fault; taken: delivered)."""
        while self._due:
            held = self._due.pop()
            try:
                if not self.topology.sendable((held.row.product_key, held.row.device_key)):
                    continue  # parked meanwhile (1212): it goes with its device's other rows
                await self._deliver([held.row], [batch_element(held.row)], held.method, True)
            finally:
                self.holding.asked(held.row.id)

    async def _settle_persisting(self, probe: Probe) -> bool:
        """Count the batch's lone refusals in the runs and dead-letter the suspects whose
        refusal now persists; True if none is left (the bisection may go on)."""
        for row, reply in self.runs.take_persisting(probe, self.clock()):
            await self._reject(row, reply, "refusal_persists")
        return not probe.suspects

    async def _reject(self, row: QueuedSample, reply: Reply, evidence: str) -> None:
        text = clip(reply.message, HUB_TEXT_STORED_MAX)
        await self.queue.reject([row.id], reply.code, text, {(row.product_key, row.device_key)})
        self.rejected += 1
        self.progress.set()
        log.warning(
            "sample_rejected id=%d device=%s/%s ts_ms=%d code=%d message=%r evidence=%s",
            row.id,
            row.product_key,
            row.device_key,
            row.ts_ms,
            reply.code,
            clip(reply.message),
            evidence,
        )
