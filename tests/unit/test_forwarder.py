"""The forwarder's decisions against small in-memory stand-ins of our own interfaces.

The stand-ins play the queue (rows in a dict), the session (a function that answers a request
as a hub would) and the topology (a set of parked devices). What crosses a socket is tested in
tests/integration/; here each reply code's consequence is checked exactly and fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any, cast

import pytest

from gatewayd.config import ForwardConfig, GatewayConfig
from gatewayd.enos.protocol import METHOD_POST_BATCH, METHOD_RESUME_BATCH, Reply
from gatewayd.forward.batches import AGAIN, LIVE_HOLD_S
from gatewayd.forward.loop import Forwarder
from gatewayd.forward.replies import (
    REJECTED_LOCALLY,
    ReplyHandler,
    request_bytes,
)
from gatewayd.model import QueuedSample

Key = tuple[str, str]
NOW_MS = 1_800_000_000_000


class MemoryQueue:
    """The parts of SampleQueue the forwarder uses, over a dict of rows."""

    def __init__(self, rows: list[QueuedSample]) -> None:
        self.rows = {row.id: row for row in rows}
        self.acked: list[int] = []
        self.rejected: dict[int, tuple[int, str]] = {}
        self.failed: list[int] = []
        self.new_data = asyncio.Event()

    async def fetch_after(self, after_id: int, limit: int) -> list[QueuedSample]:
        return [self.rows[i] for i in sorted(self.rows) if i > after_id][:limit]

    async def fetch_newest(self, after_id: int, limit: int) -> list[QueuedSample]:
        return [self.rows[i] for i in sorted(self.rows, reverse=True) if i > after_id][:limit]

    async def next_id_excluding(self, after_id: int, excluded: set[Key]) -> int | None:
        ids = [
            i
            for i, r in sorted(self.rows.items())
            if i > after_id and (r.product_key, r.device_key) not in excluded
        ]
        return ids[0] if ids else None

    async def ack(self, ids: list[int]) -> int:
        self.acked += ids
        return sum(self.rows.pop(i, None) is not None for i in ids)

    async def reject(
        self, ids: list[int], code: int, message: str, devices: set[Key] | None = None
    ) -> int:
        for i in ids:
            row = self.rows.pop(i)
            assert devices == {(row.product_key, row.device_key)}  # for report by exception
            self.rejected[i] = (code, message)
        return len(ids)

    async def record_failure(self, ids: list[int], code: int | None) -> None:
        self.failed += ids


Hub = Callable[[str, list[dict[str, Any]]], tuple[int, str]]


class ScriptedSession:
    """Answers each request with what `hub(method, elements)` says; records every request."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.requests: list[tuple[str, int, int]] = []  # (method, samples, code)
        self._ids = iter(range(1, 10**9))
        #: Sessions made so far (MqttSession.connections); a test adds one for a reconnect.
        self.connections = 1

    def next_id(self) -> str:
        return str(next(self._ids))

    async def request(self, topic: str, request_id: str, payload: bytes, timeout_s: float) -> Reply:
        body = json.loads(payload)
        code, message = self.hub(body["method"], body["params"])
        self.requests.append((body["method"], len(body["params"]), code))
        return Reply(request_id, code, message, {})


class SetTopology:
    """Parked devices in a set; a repair changes nothing (the hub keeps refusing)."""

    def __init__(self) -> None:
        self.parked: set[Key] = set()
        self.repairs = 0
        self.ready = asyncio.Event()
        self.ready.set()
        self.generation = 0
        self.has_park_history = False
        self.login_rounds = 0

    def sendable(self, key: Key) -> bool:
        return key not in self.parked

    def unsendable(self) -> set[Key]:
        return set(self.parked)

    def park(self, key: Key, reason: str) -> None:
        self.parked.add(key)

    def repair_may_help(self, keys: set[Key]) -> bool:
        return True

    async def repair(self, keys: set[Key], logins_seen: int) -> None:
        self.repairs += 1

    def confirmed(self, keys: set[Key]) -> None:
        pass


def rows(
    device: str, n: int, start_id: int = 1, bad: frozenset[int] = frozenset(), ts: int = 0
) -> list[QueuedSample]:
    out = []
    for i in range(n):
        points = {"P": i, **({"Bogus": 1} if i in bad else {})}
        ts_ms = ts or NOW_MS - 3_600_000 + i
        out.append(QueuedSample(start_id + i, "pk", device, ts_ms, json.dumps(points)))
    return out


def hub_refusing(code: int, when: Callable[[dict[str, Any]], bool]) -> Hub:
    def answer(method: str, elements: list[dict[str, Any]]) -> tuple[int, str]:
        if any(when(e) for e in elements):
            return code, f"refused ({code})"
        return 200, ""

    return answer


def handler_for(
    queue: MemoryQueue, hub: Hub, **forward: Any
) -> tuple[ReplyHandler, ScriptedSession, SetTopology]:
    session = ScriptedSession(hub)
    topology = SetTopology()
    topics = {METHOD_POST_BATCH: "post", METHOD_RESUME_BATCH: "resume"}
    handler = ReplyHandler(
        cast(Any, queue), cast(Any, session), cast(Any, topology), ForwardConfig(**forward), topics
    )
    return handler, session, topology


def clocked_handler(
    queue: MemoryQueue, hub: Hub
) -> tuple[ReplyHandler, ScriptedSession, list[float]]:
    """A handler whose monotonic clock the test steps (clock[0], from 100 s)."""
    handler, session, _ = handler_for(queue, hub)
    clock = [100.0]
    handler.clock = lambda: clock[0]
    return handler, session, clock


async def send(handler: ReplyHandler, batch: list[QueuedSample]) -> None:
    from gatewayd.enos.protocol import batch_element

    await handler.send(batch, [batch_element(r) for r in batch], METHOD_RESUME_BATCH)


async def test_200_deletes_exactly_the_rows_of_the_request() -> None:
    batch = rows("a", 10)
    queue = MemoryQueue(batch + rows("a", 5, start_id=100))
    handler, _, _ = handler_for(queue, lambda m, e: (200, ""))
    await send(handler, batch)
    assert queue.acked == [r.id for r in batch] and len(queue.rows) == 5
    assert handler.delivered == 10 and handler.failures == 0 and not handler.rewind


@pytest.mark.parametrize("code", [500, 1001, 1300])
async def test_any_other_code_keeps_the_rows_and_rewinds(code: int) -> None:
    batch = rows("a", 10)
    queue = MemoryQueue(batch)
    handler, _, _ = handler_for(queue, lambda m, e: (code, "no"))
    await send(handler, batch)
    assert len(queue.rows) == 10 and queue.failed == [r.id for r in batch]
    assert handler.rewind and handler.failures == 1 and handler.replies == {str(code): 1}


@pytest.mark.parametrize("code", [1008, 1204, 1206, 1220])
async def test_bisection_dead_letters_exactly_the_bad_samples(code: int) -> None:
    batch = rows("a", 64, bad=frozenset({5, 40}))
    queue = MemoryQueue(batch)
    handler, session, _ = handler_for(
        queue, hub_refusing(code, lambda e: "Bogus" in e["measurepoints"])
    )
    await send(handler, batch)
    assert sorted(queue.rejected) == [6, 41]  # ids start at 1
    assert {c for c, _ in queue.rejected.values()} == {code}
    assert len(queue.acked) == 62 and not queue.rows
    assert len(session.requests) <= 1 + 2 * 2 * 6  # two bad samples, six halvings each


async def test_1212_after_a_repair_parks_only_the_device_that_causes_it() -> None:
    batch = [
        r for pair in zip(rows("ok", 8), rows("lost", 8, start_id=100), strict=True) for r in pair
    ]
    queue = MemoryQueue(batch)
    handler, _, topology = handler_for(
        queue, hub_refusing(1212, lambda e: e["deviceKey"] == "lost")
    )
    await send(handler, batch)
    assert topology.parked == {("pk", "lost")} and topology.repairs == 1
    assert {queue_row.device_key for queue_row in queue.rows.values()} == {"lost"}
    assert len(queue.acked) == 8 and not queue.rejected


async def test_a_sample_too_large_for_a_request_is_dead_lettered_unsent() -> None:
    huge = QueuedSample(1, "pk", "a", NOW_MS, json.dumps({"S": "x" * 5000}))
    queue = MemoryQueue([huge])
    handler, session, _ = handler_for(queue, lambda m, e: (200, ""), batch_max_bytes=2048)
    await send(handler, [huge])
    assert queue.rejected[1][0] == REJECTED_LOCALLY and "batch_max_bytes" in queue.rejected[1][1]
    assert session.requests == []


def forwarder_for(queue: MemoryQueue, topology: SetTopology, **forward: Any) -> Forwarder:
    gateway = GatewayConfig(product_key="gw", device_key="gw1", device_secret="s")
    return Forwarder(
        cast(Any, queue),
        cast(Any, ScriptedSession(lambda m, e: (200, ""))),
        cast(Any, topology),
        ForwardConfig(**forward),
        gateway,
        clock_ms=lambda: NOW_MS,
    )


async def test_young_rows_go_live_first_and_old_ones_as_resume() -> None:
    old = rows("a", 5)
    young = rows("a", 3, start_id=10, ts=NOW_MS - 1000)
    forwarder = forwarder_for(MemoryQueue(old + young), SetTopology(), live_max_age_s=60)
    first = await forwarder._next_batch()
    second = await forwarder._next_batch()
    assert isinstance(first, tuple) and isinstance(second, tuple)
    assert ([r.id for r in first[0]], first[2]) == ([10, 11, 12], METHOD_POST_BATCH)
    assert ([r.id for r in second[0]], second[2]) == ([1, 2, 3, 4, 5], METHOD_RESUME_BATCH)


async def test_rows_of_a_parked_device_are_jumped_not_read() -> None:
    lost = rows("lost", 1000)
    good = rows("good", 10, start_id=5000)
    topology = SetTopology()
    topology.parked.add(("pk", "lost"))
    forwarder = forwarder_for(
        MemoryQueue(lost + good), topology, batch_max_samples=100, live_max_age_s=0
    )
    assert await forwarder._next_batch() == AGAIN  # 100 parked rows read, then a jump
    batch = await forwarder._next_batch()
    assert isinstance(batch, tuple) and [r.id for r in batch[0]] == [r.id for r in good]
    assert forwarder.rows_read == 110 and forwarder.skips == 1


class GatedSession(ScriptedSession):
    """Records each request as it is published; the hub answers 200 once `answer` is set."""

    def __init__(self) -> None:
        super().__init__(lambda m, e: (200, ""))
        self.published: list[list[int]] = []  # each request's sample ts_ms offsets
        self.answer = asyncio.Event()

    async def request(self, topic: str, request_id: str, payload: bytes, timeout_s: float) -> Reply:
        body = json.loads(payload)
        self.published.append([e["time"] - NOW_MS for e in body["params"]])
        await self.answer.wait()
        return Reply(request_id, 200, "", {})


async def test_live_rows_wait_for_the_live_reply_ahead_at_most_a_moment() -> None:
    """Nagle's rule for live requests with no backlog in flight: rows committed while a live
    request awaits its reply go together once it comes, or after LIVE_HOLD_S if it does not
    (issue 18: two samples a request after a drain cost ~34 B a point instead of ~24)."""
    queue = MemoryQueue(rows("a", 1, start_id=1, ts=NOW_MS + 1))
    session = GatedSession()
    forwarder = Forwarder(
        cast(Any, queue),
        cast(Any, session),
        cast(Any, SetTopology()),
        ForwardConfig(live_max_age_s=60),
        GatewayConfig(product_key="gw", device_key="gw1", device_secret="s"),
        clock_ms=lambda: NOW_MS,
    )

    def commit(row_id: int, offset: int) -> None:
        queue.rows[row_id] = rows("a", 1, start_id=row_id, ts=NOW_MS + offset)[0]
        queue.new_data.set()

    async def until(condition: Callable[[], bool]) -> None:
        while not condition():  # noqa: ASYNC110 - the stand-ins' state has no event to await
            await asyncio.sleep(0.01)

    task = asyncio.create_task(forwarder.run())
    try:
        async with asyncio.timeout(5):
            await until(lambda: len(session.published) == 1)
            commit(2, 2)
            await asyncio.sleep(0.05)
            commit(3, 3)
            await asyncio.sleep(0.05)
            assert session.published == [[1]]  # held while the first awaits its reply
            session.answer.set()
            await until(lambda: len(session.published) == 2)
            assert session.published[1] == [2, 3]  # together, as soon as the reply came
            await until(lambda: not forwarder.inflight)
            session.answer.clear()
            commit(4, 4)
            await until(lambda: len(session.published) == 3)
            commit(5, 5)
            started = asyncio.get_running_loop().time()
            await until(lambda: len(session.published) == 4)  # no reply: the hold runs out
            assert session.published[3] == [5]
            assert asyncio.get_running_loop().time() - started >= LIVE_HOLD_S * 0.9
            session.answer.set()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_young_rows_piled_up_in_an_outage_go_in_requests_sized_by_the_link() -> None:
    """After an outage shorter than live_max_age_s every queued row is young. Before: live
    requests were packed to batch_max_bytes (here 500 samples, ~35 KB) and up to 16 of them
    went out at once past the link's window (found by an adversary: live p99 9.8 s at
    256 kbit/s). Now each is sized like a backlog request, and a second one waits for room."""
    young = rows("a", 2000, ts=NOW_MS - 1000)
    forwarder = forwarder_for(MemoryQueue(young), SetTopology(), live_max_age_s=60)
    first = await forwarder._next_batch()
    assert isinstance(first, tuple) and first[3] is True  # a live request
    size = request_bytes(first[1])
    assert size <= forwarder.window.batch_bytes() < 35_000
    forwarder._live_inflight, forwarder._live_bytes = 1, forwarder.window.window_bytes()
    second = await forwarder._next_batch()
    assert not (isinstance(second, tuple) and second[3])  # no second live request past the window


async def test_the_newest_young_rows_go_live_and_the_older_ones_by_the_window() -> None:
    """Packing the oldest young rows first left the freshest readings behind the live cursor,
    to wait for the whole young backlog (bench/uplink.py --backlog-age-s 1: live p99 36.8 s)."""
    young = rows("a", 2000, ts=NOW_MS - 1000)
    forwarder = forwarder_for(MemoryQueue(young), SetTopology(), live_max_age_s=60)
    first = await forwarder._next_batch()
    assert isinstance(first, tuple) and first[3] is True
    assert first[0][-1].id == young[-1].id  # the newest row is in the live request
    backlog = await forwarder._next_batch()
    assert isinstance(backlog, tuple) and backlog[0][0].id == young[0].id  # oldest first
