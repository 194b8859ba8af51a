"""The evidence about refused lone samples where requests overlap, the session drops, and a run
is said: found by an adversary, each of them lost good samples or the way back.

- A 200 is evidence against a refusal only if its request was sent after the refused batch:
  not a 200 whose delete was still being written when the refusal came, nor one to an earlier
  request that the hub answered late (the adversary's 400-sample drain lost 5-20 good samples
  to a 5 s burst that began while four requests were in flight).
- A reconnect of the session ends a run of refusals even when no request was out to fail
  (two short bursts either side of a broker outage that began while the forwarder backed off
  dead-lettered every good sample).
- `refusals_persist` is said once per run, whichever path dead-letters first.

The stand-ins are tests/unit/test_forwarder.py's; the handler's clock is stepped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from gatewayd.enos.protocol import Reply
from gatewayd.forward.refusal_evidence import PERSIST_S
from gatewayd.forward.replies import ReplyHandler
from gatewayd.model import QueuedSample
from tests.unit.test_forwarder import (
    Hub,
    MemoryQueue,
    ScriptedSession,
    clocked_handler,
    hub_refusing,
    rows,
    send,
)
from tests.unit.test_refusal_evidence import of_devices

BOUND_S = 5.0


class GatedAckQueue(MemoryQueue):
    """A queue whose delete waits until the test opens `gate` (the writer thread's delete and
    fsync, as long as the test likes); `deleted` is set once a delete is done."""

    def __init__(self, rows: list[QueuedSample]) -> None:
        super().__init__(rows)
        self.gate = asyncio.Event()
        self.deleted = asyncio.Event()

    async def ack(self, ids: list[int]) -> int:
        await self.gate.wait()
        done = await super().ack(ids)
        self.deleted.set()
        return done


class HookedSession(ScriptedSession):
    """The scripted hub, with `before(params, code)` awaited before each answer is returned:
    the test holds an answer back, or lets another request's answer land first."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.before: Callable[[list[dict[str, Any]], int], Awaitable[None]] | None = None

    async def request(self, topic: str, request_id: str, payload: bytes, timeout_s: float) -> Reply:
        params = json.loads(payload)["params"]
        reply = await super().request(topic, request_id, payload, timeout_s)
        if self.before is not None:
            await self.before(params, reply.code)
        return reply


def hooked(queue: MemoryQueue, hub: Hub) -> tuple[ReplyHandler, HookedSession, list[float]]:
    handler, _, clock = clocked_handler(queue, hub)
    session = HookedSession(hub)
    handler.session = cast(Any, session)
    return handler, session, clock


def first_200_then_1220() -> Hub:
    """The hub takes the first request, then refuses everything (a burst that began after it)."""
    answered = [0]

    def hub(method: str, elements: list[dict[str, Any]]) -> tuple[int, str]:
        answered[0] += 1
        return (200, "") if answered[0] == 1 else (1220, "busy")

    return hub


def rejected_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "sample_rejected" in r.getMessage()]


async def test_a_200_whose_delete_is_slow_is_no_evidence_against_a_later_refusal() -> None:
    """A is taken just before the burst, B refused in it; A's delete lands while B is being
    split. Before: B's lone samples saw 'the hub took others since' and were dead-lettered."""
    a, b = rows("a", 4), rows("b", 4, start_id=100)
    queue = GatedAckQueue(a + b)
    handler, session, _ = hooked(queue, first_200_then_1220())

    async def land_a_first(params: list[dict[str, Any]], code: int) -> None:
        if code != 200 and len(params) == 1:  # B's first lone refusal waits for A's delete
            queue.gate.set()
            await queue.deleted.wait()

    session.before = land_a_first
    async with asyncio.timeout(BOUND_S):
        await asyncio.gather(send(handler, a), send(handler, b))
    assert queue.acked == [r.id for r in a]
    assert not queue.rejected and sorted(queue.rows) == [r.id for r in b]
    assert handler.storms == 0 and sorted(handler.holding.held) == [r.id for r in b]  # set aside


async def test_a_late_200_to_an_earlier_request_is_no_evidence_against_a_refusal() -> None:
    """The hub answers out of order: A (sent first) is taken, but its 200 arrives after B's
    refusal, while B is being split. Before: B's lone samples were dead-lettered."""
    a, b = rows("a", 4), rows("b", 4, start_id=100)
    queue = MemoryQueue(a + b)
    handler, session, _ = hooked(queue, first_200_then_1220())
    a_answered = asyncio.Event()
    b_refused = asyncio.Event()

    async def answer_a_late(params: list[dict[str, Any]], code: int) -> None:
        if code == 200:
            await b_refused.wait()
            return
        if len(params) == 1 and not b_refused.is_set():  # B's first lone refusal
            b_refused.set()
            handler.progress.clear()
            await handler.progress.wait()  # A's 200 lands and its rows are deleted
            a_answered.set()

    session.before = answer_a_late
    async with asyncio.timeout(BOUND_S):
        await asyncio.gather(send(handler, a), send(handler, b))
    assert a_answered.is_set() and queue.acked == [r.id for r in a]
    assert not queue.rejected and sorted(queue.rows) == [r.id for r in b]


async def test_a_200_to_a_request_sent_after_the_refusal_is_still_evidence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What holds: B (every sample of a wrong model) is refused; C, sent after B, is taken
    while B is split. B's lone samples refused after C's 200 are the data's; the one refused
    before it is asked once more, alone, and then is the data's too."""
    b, c = rows("b", 4, bad=frozenset(range(4))), rows("c", 4, start_id=100)
    queue = MemoryQueue(b + c)
    handler, session, _ = hooked(queue, hub_refusing(1204, lambda e: "Bogus" in e["measurepoints"]))
    b_refused = asyncio.Event()

    async def c_after_b(params: list[dict[str, Any]], code: int) -> None:
        if params[0]["deviceKey"] == "c":
            return
        if len(params) == 1 and not b_refused.is_set():  # B's first lone refusal
            b_refused.set()
            handler.progress.clear()
            await handler.progress.wait()  # C's 200 lands

    async def send_c() -> None:
        await b_refused.wait()
        await send(handler, c)

    session.before = c_after_b
    async with asyncio.timeout(BOUND_S):
        await asyncio.gather(send(handler, b), send_c())
    assert sorted(queue.rejected) == [r.id for r in b] and queue.acked == [r.id for r in c]
    evidence = sorted(line.split("evidence=")[1] for line in rejected_lines(caplog))
    assert evidence == ["hub_took_others"] * 3 + ["refused_again"]
    assert handler.storms == 0


@pytest.mark.parametrize("devices", [1, 2])
async def test_a_reconnect_while_backing_off_ends_the_run(devices: int) -> None:
    """Good samples: a 1220 burst (two batches), the broker down and up again while the
    forwarder backed off (no request out, none failed), a second burst 61 s after the first.
    Before: the second burst found a run of 3 batches over 61 s and dead-lettered all 8.
    A refusal that persists 60 s after the reconnect is still the data's."""
    batch = of_devices(devices, 8)
    queue = MemoryQueue(batch)
    handler, session, clock = clocked_handler(queue, lambda m, e: (1220, "busy"))
    for _ in range(2):
        await send(handler, batch)
        clock[0] += 20.0
    session.connections += 1  # the session was lost and made again meanwhile
    clock[0] = 161.0
    await send(handler, batch)
    # (Every other bisection sets its lone refusals aside instead of a storm, as a storm gives
    # them back.)
    assert not queue.rejected and len(queue.rows) == 8
    assert handler.storms == 1
    for _ in range(2):
        clock[0] += PERSIST_S / 2
        await send(handler, batch)
    assert sorted(queue.rejected) == sorted(r.id for r in batch)


async def test_a_run_that_spans_no_reconnect_still_persists() -> None:
    """The same refusals with the session up throughout: the run of 61 s is the data's."""
    batch = rows("a", 8)
    queue = MemoryQueue(batch)
    handler, _, clock = clocked_handler(queue, lambda m, e: (1204, "model"))
    for at in (100.0, 120.0, 161.0):
        clock[0] = at
        await send(handler, batch)
    assert sorted(queue.rejected) == [r.id for r in batch]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
async def test_refusals_persist_is_said_once_per_run_whichever_path_rejects(
    batch_size: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A model that does not fit, retried every 10 s. Before: when the run already persisted
    as a batch's lone samples came back, they were dead-lettered without the line that says
    so and names the way back; it was never said. A second run (after a reconnect) is said
    once more."""
    batch = rows("a", batch_size)
    queue = MemoryQueue(batch)
    handler, session, clock = clocked_handler(queue, lambda m, e: (1204, "model"))
    while not queue.rejected:
        await send(handler, batch)
        clock[0] += 10.0
    more = rows("a", batch_size, start_id=100)
    queue.rows.update({r.id: r for r in more})
    await send(handler, more)  # the same run: said already
    lines = [r.getMessage() for r in caplog.records]
    said = [i for i, line in enumerate(lines) if "refusals_persist" in line]
    rejected = [i for i, line in enumerate(lines) if "evidence=refusal_persists" in line]
    assert len(said) == 1 and len(rejected) == 2 * batch_size and said[0] < rejected[0]
    assert "gatewayd queue requeue-rejected --code 1204" in lines[said[0]]
    session.connections += 1
    again = rows("a", batch_size, start_id=200)
    queue.rows.update({r.id: r for r in again})
    while again[0].id not in queue.rejected:
        await send(handler, again)
        clock[0] += 10.0
    runs = [r.getMessage() for r in caplog.records if "refusals_persist" in r.getMessage()]
    assert len(runs) == 2 and not queue.rows
