"""Refused lone samples: the data's fault (dead-lettered) or the hub's (kept queued).

The handler's clock is stepped here instead of waiting out the confirmation window. The
stand-ins are tests/unit/test_forwarder.py's.
"""

from __future__ import annotations

from typing import Any

import pytest

from gatewayd.enos.protocol import METHOD_RESUME_BATCH
from gatewayd.errors import ReplyTimeout, UplinkDown
from gatewayd.forward.replies import ONE_DEVICE_CONFIRM_S
from tests.unit.test_forwarder import (
    MemoryQueue,
    clocked_handler,
    handler_for,
    hub_refusing,
    rows,
    send,
)


async def test_a_hub_refusing_everything_across_devices_dead_letters_nothing() -> None:
    batch = [
        r for pair in zip(rows("a", 32), rows("b", 32, start_id=100), strict=True) for r in pair
    ]
    queue = MemoryQueue(batch)
    handler, session, _ = handler_for(queue, lambda m, e: (1220, "busy"))
    await send(handler, batch)
    assert not queue.rejected and len(queue.rows) == 64
    assert handler.storms == 1 and handler.rewind
    assert len(session.requests) < 20  # the bisection stopped at the second device's refusal


async def test_refusals_of_one_device_that_last_are_that_devices_content() -> None:
    """Every sample of the only device refused, again and again with no 200: its content (a
    model mismatch on a one-device gateway must not block the queue for ever), but only once
    the refusals have lasted ONE_DEVICE_CONFIRM_S; the first time it may be a short storm."""
    batch = rows("a", 8)
    queue = MemoryQueue(batch)
    handler, _, clock = clocked_handler(queue, lambda m, e: (1204, "model"))
    await send(handler, batch)
    assert not queue.rejected and handler.storms == 1
    clock[0] += ONE_DEVICE_CONFIRM_S - 1
    await send(handler, batch)
    assert not queue.rejected and handler.storms == 2
    clock[0] += 1
    await send(handler, batch)
    assert sorted(queue.rejected) == [r.id for r in batch]


async def test_a_short_storm_that_meets_one_device_only_dead_letters_nothing() -> None:
    """Before: a refuse-everything burst that happened to meet lone samples of one device only
    dead-lettered them at once (seen in CI's chaos round: 5 samples, 1220)."""
    batch = rows("a", 8)
    queue = MemoryQueue(batch)
    storm = [True]
    handler, _, clock = clocked_handler(
        queue, lambda m, e: (1220, "busy") if storm[0] else (200, "")
    )
    await send(handler, batch)
    assert not queue.rejected and handler.storms == 1
    storm[0] = False
    clock[0] += ONE_DEVICE_CONFIRM_S + 1
    await send(handler, batch)
    assert not queue.rejected and len(queue.acked) == 8


async def test_a_lone_sample_refused_with_no_200_in_between_stays_queued() -> None:
    """One live sample refused while nothing else is sent: no evidence either way, so the hub
    is not believed yet; the sample waits for a retry in a bigger batch."""
    batch = rows("a", 1)
    queue = MemoryQueue(batch)
    handler, _, _ = handler_for(queue, lambda m, e: (1220, "busy"))
    await send(handler, batch)
    assert not queue.rejected and len(queue.rows) == 1 and handler.storms == 1


async def test_a_refusal_just_before_a_storm_ends_is_asked_again_not_believed() -> None:
    batch = rows("a", 8)
    queue = MemoryQueue(batch)
    answers = iter([1220] * 4)  # the batch, its halves down to the first lone sample; then calm
    handler, session, _ = handler_for(queue, lambda m, e: (next(answers, 200), ""))
    await send(handler, batch)
    assert not queue.rejected and len(queue.acked) == 8
    assert session.requests[-1] == (METHOD_RESUME_BATCH, 1, 200)  # the suspect, asked again


async def test_a_bad_first_sample_is_dead_lettered_after_being_asked_again() -> None:
    batch = rows("a", 8, bad=frozenset({0}))
    queue = MemoryQueue(batch)
    handler, _, _ = handler_for(queue, hub_refusing(1204, lambda e: "Bogus" in e["measurepoints"]))
    await send(handler, batch)
    assert list(queue.rejected) == [1] and len(queue.acked) == 7 and handler.storms == 0


@pytest.mark.parametrize("outage", ["timeout", "uplink_down", "nothing_sent"])
async def test_two_short_storms_around_an_outage_dead_letter_nothing(outage: str) -> None:
    """A one-device gateway, good samples: a 1220 burst, an outage (or a long backoff), another
    burst 61 s after the first. Before: the second dead-lettered all 8 (found by an adversary:
    the rule measured 'no 200 since the first refusal', which an outage satisfies)."""
    batch = rows("a", 8)
    queue = MemoryQueue(batch)
    handler, session, clock = clocked_handler(queue, lambda m, e: (1220, "busy"))
    await send(handler, batch)
    if outage != "nothing_sent":
        answer = session.request

        async def no_reply(*args: Any, **kwargs: Any) -> Any:
            raise ReplyTimeout("no reply", 15.0) if outage == "timeout" else UplinkDown("down")

        session.request = no_reply  # type: ignore[method-assign]
        for _ in range(5):
            clock[0] += 12.0
            await send(handler, batch)
        session.request = answer  # type: ignore[method-assign]
    clock[0] = 161.0
    await send(handler, batch)
    assert not queue.rejected and len(queue.rows) == 8
