"""A lone refused sample with no evidence either way: held aside, not a storm
(gatewayd/forward/held_refusal.py). The stand-ins are tests/unit/test_forwarder.py's.

Found by an operator test: a live request holding one sample of a device whose model lacks a
point was refused before any 200 could be evidence, was put down to a storm, and sending backed
off for every device.
"""

from __future__ import annotations

from gatewayd.enos.protocol import METHOD_RESUME_BATCH
from gatewayd.forward.held_refusal import HeldRefusal
from tests.unit.test_forwarder import (
    MemoryQueue,
    SetTopology,
    clocked_handler,
    forwarder_for,
    handler_for,
    hub_refusing,
    rows,
    send,
)


async def test_a_held_sample_is_asked_again_after_a_later_200_and_dead_lettered() -> None:
    """dev a's sample refused alone: held, no storm, no backoff. dev b's next request is taken:
    that 200 is evidence, a's sample is asked once more alone, refused again: dead-lettered."""
    a, b = rows("a", 1), rows("b", 1, start_id=10)
    queue = MemoryQueue(a + b)
    handler, session, _ = clocked_handler(
        queue, hub_refusing(1204, lambda e: e["deviceKey"] == "a")
    )
    await send(handler, a)
    assert handler.storms == 0 and not handler.rewind and not queue.rejected
    assert handler.holding.skips(a[0].id)
    await send(handler, b)
    assert queue.acked == [10] and list(queue.rejected) == [1]
    assert session.requests[-1] == (METHOD_RESUME_BATCH, 1, 1204)  # a, asked again alone
    assert handler.storms == 0 and not handler.holding.skips(a[0].id)


async def test_a_held_sample_taken_when_asked_again_is_delivered() -> None:
    """The refusal was the tail of a storm: asked again after the hub took b's, a is taken."""
    a, b = rows("a", 1), rows("b", 1, start_id=10)
    queue = MemoryQueue(a + b)
    refusing = [True]
    handler, _, _ = clocked_handler(
        queue, lambda m, e: (1220, "busy") if refusing[0] else (200, "")
    )
    await send(handler, a)
    refusing[0] = False
    await send(handler, b)
    assert sorted(queue.acked) == [1, 10] and not queue.rejected and handler.storms == 0


async def test_a_second_lone_refusal_with_no_200_between_is_a_storm() -> None:
    """The hub refusing everything: a's sample held, then b's refused alone too: a storm, the
    loop backs off, and the held sample goes back to the flow; nothing is dead-lettered."""
    a, b = rows("a", 1), rows("b", 1, start_id=10)
    queue = MemoryQueue(a + b)
    handler, _, _ = clocked_handler(queue, lambda m, e: (1220, "busy"))
    await send(handler, a)
    await send(handler, b)
    assert handler.storms == 1 and handler.rewind and not queue.rejected
    assert len(queue.rows) == 2 and not handler.holding.skips(a[0].id)


async def test_a_200_to_a_request_sent_before_the_refusal_is_no_evidence() -> None:
    """b's request went before a's refusal (its reply came later): a stays held."""
    a, b = rows("a", 1), rows("b", 1, start_id=10)
    queue = MemoryQueue(a + b)
    handler, _, _ = clocked_handler(queue, hub_refusing(1204, lambda e: e["deviceKey"] == "a"))
    handler.holding.hold([a[0]], METHOD_RESUME_BATCH, refused_serial=5, now=0.0)
    handler.sent_serial = 3  # b's request is the 4th sent: before a's refusal
    await send(handler, b)
    assert queue.acked == [10] and not queue.rejected and handler.holding.skips(a[0].id)


async def test_the_loop_skips_a_held_row_as_it_does_a_parked_devices() -> None:
    queue = MemoryQueue(rows("a", 3))
    forwarder = forwarder_for(queue, SetTopology(), live_max_age_s=0)
    forwarder._holding.hold([queue.rows[2]], METHOD_RESUME_BATCH, refused_serial=1, now=0.0)
    batch = await forwarder._next_batch()
    assert isinstance(batch, tuple) and [r.id for r in batch[0]] == [1, 3]


def test_a_held_sample_with_no_evidence_goes_back_after_hold_max() -> None:
    """Nothing else sent, or nothing answered: back to the flow, like a storm's longest backoff."""
    holding = HeldRefusal(hold_max_s=60.0)
    row = rows("a", 1)[0]
    assert holding.hold([row], METHOD_RESUME_BATCH, refused_serial=1, now=0.0)
    assert not holding.hold(rows("b", 1, start_id=9), METHOD_RESUME_BATCH, 2, now=1.0)
    assert not holding.release_stale(59.0) and holding.skips(row.id)
    assert holding.release_stale(60.0) and not holding.skips(row.id)


def pending(queue: MemoryQueue, handler: object, order: list) -> list:  # type: ignore[type-arg]
    """The rows the loop would choose, oldest first (`order`: as they were taken): queued,
    not held, not being asked again."""
    holding = handler.holding  # type: ignore[attr-defined]
    return [r for r in order if r.id in queue.rows and not holding.skips(r.id)]


async def test_two_bad_devices_refused_alone_are_held_and_the_good_device_flows() -> None:
    """Found by an adversary: two devices whose every sample is refused, one good device, taken
    in turn. Each bisection ended on two lone refusals of two devices, 'a storm', backoff, and
    the next try began with the same oldest rows: the good device delivered nothing for ~60 s,
    again and again. Now the lone refusals are held aside together, the rest is looked at again
    at once (no backoff), and the good device's 200 is the evidence that dead-letters them."""
    b1, b2, g = rows("b1", 3), rows("b2", 3, start_id=10), rows("g", 3, start_id=20)
    batch = [r for trio in zip(b1, b2, g, strict=True) for r in trio]
    queue = MemoryQueue(batch)
    handler, _, _ = clocked_handler(
        queue, hub_refusing(1206, lambda e: e["deviceKey"] in ("b1", "b2"))
    )
    await send(handler, batch)
    assert handler.storms == 0 and handler.failures == 0 and not queue.rejected
    for _ in range(6):
        if not queue.rows:
            break
        handler.rewind = False
        await send(handler, pending(queue, handler, batch) or list(queue.rows.values()))
    assert handler.storms == 0
    assert sorted(queue.rejected) == sorted(r.id for r in b1 + b2)
    assert sorted(queue.acked) == [r.id for r in g]


async def test_a_bad_device_refused_twice_between_good_200s_is_no_storm() -> None:
    """Found by an adversary: a bad device polled every 1 s, a good one every 3 s: two lone
    refusals of the bad device came between two 200s, 'a storm', backoff every ~3 s (the good
    device's p95 reading-to-200 4.1 s instead of 0.2 s). More lone refusals of a device already
    held join the hold (up to a bound) instead."""
    bad, good = rows("bad", 2), rows("good", 1, start_id=20)
    queue = MemoryQueue(bad + good)
    handler, _, _ = clocked_handler(queue, hub_refusing(1206, lambda e: e["deviceKey"] == "bad"))
    await send(handler, bad[:1])
    await send(handler, bad[1:])
    assert handler.storms == 0 and handler.failures == 0
    await send(handler, good)
    assert sorted(queue.rejected) == [1, 2] and queue.acked == [20] and handler.storms == 0


async def test_a_held_sample_whose_device_was_parked_is_not_asked_again() -> None:
    """Read in the code by an adversary: a held sample made due by a 200 was asked again even
    if its device had been parked (1212) meanwhile; parked rows are not to be sent."""
    a, b = rows("a", 1), rows("b", 1, start_id=10)
    queue = MemoryQueue(a + b)
    handler, session, topology = handler_for(
        queue, hub_refusing(1204, lambda e: e["deviceKey"] == "a")
    )
    await send(handler, a)
    assert handler.holding.skips(a[0].id)
    topology.parked.add(("pk", "a"))
    await send(handler, b)
    assert queue.acked == [10] and not queue.rejected and 1 in queue.rows
    assert len(session.requests) == 2 and not handler.holding.skips(a[0].id)


async def test_two_lone_refusals_of_one_device_in_one_request_are_held_not_a_storm() -> None:
    """Found in review: a live request may carry two readings of a bad device (the live hold
    batches them); both refused alone with no 200 between was a storm, backing every device off,
    although the README says a bisection's lone refusals are held together."""
    bad, good = rows("bad", 2), rows("good", 1, start_id=20)
    queue = MemoryQueue(bad + good)
    handler, _, _ = clocked_handler(queue, hub_refusing(1206, lambda e: e["deviceKey"] == "bad"))
    await send(handler, bad)
    assert handler.storms == 0 and handler.failures == 0 and not handler.rewind
    await send(handler, good)
    assert sorted(queue.rejected) == [1, 2] and queue.acked == [20] and handler.storms == 0
