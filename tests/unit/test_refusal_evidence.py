"""Refused lone samples: the data's fault (dead-lettered) or the hub's (kept queued).

The evidence is gatewayd/forward/refusal_evidence.py's; the handler's clock is stepped here
instead of waiting out PERSIST_S. The stand-ins are tests/unit/test_forwarder.py's.
"""

from __future__ import annotations

from typing import Any

import pytest

from gatewayd.enos.protocol import METHOD_RESUME_BATCH
from gatewayd.errors import ReplyTimeout, UplinkDown
from gatewayd.forward.refusal_evidence import PERSIST_LONE_MIN, PERSIST_S, PERSIST_TIMES
from gatewayd.model import QueuedSample
from tests.unit.test_forwarder import (
    MemoryQueue,
    clocked_handler,
    handler_for,
    hub_refusing,
    rows,
    send,
)

STEP_S = 20.0


def of_devices(devices: int, n: int) -> list[QueuedSample]:
    """n rows, taken in turn from `devices` devices (a, b, ...)."""
    per_device = [rows(chr(ord("a") + d), n, start_id=1 + 100 * d) for d in range(devices)]
    return [r for group in zip(*per_device, strict=True) for r in group][:n]


async def test_a_hub_refusing_everything_across_devices_dead_letters_nothing() -> None:
    batch = [
        r for pair in zip(rows("a", 32), rows("b", 32, start_id=100), strict=True) for r in pair
    ]
    queue = MemoryQueue(batch)
    handler, session, _ = handler_for(queue, lambda m, e: (1220, "busy"))
    await send(handler, batch)
    # The first bisection's lone refusals of two devices are set aside (held_refusal.py): no
    # storm yet, the rest is looked at again at once; refused too, that is a storm.
    assert not queue.rejected and len(queue.rows) == 64
    assert handler.storms == 0 and handler.resend and not handler.rewind
    assert len(session.requests) < 20  # the bisection stopped at the second device's refusal
    rest = [r for r in batch if not handler.holding.skips(r.id)]
    await send(handler, rest)
    assert not queue.rejected and len(queue.rows) == 64
    assert handler.storms == 1 and handler.rewind and not handler.holding.held
    assert len(session.requests) < 40


async def test_refusals_of_one_device_that_last_are_that_devices_content() -> None:
    """Every sample of the only device refused, again and again with no 200: its content (a
    model mismatch on a one-device gateway must not block the queue for ever), but only once
    the refusals have lasted PERSIST_S; the first time they are held aside (no evidence either
    way), the second a short storm."""
    batch = rows("a", 8)
    queue = MemoryQueue(batch)
    handler, _, clock = clocked_handler(queue, lambda m, e: (1204, "model"))
    await send(handler, batch)
    assert not queue.rejected and handler.storms == 0 and len(handler.holding.held) == 8
    clock[0] += PERSIST_S - 1
    await send(handler, batch)
    assert not queue.rejected and handler.storms == 1
    clock[0] += 1
    await send(handler, batch)
    assert sorted(queue.rejected) == [r.id for r in batch]


@pytest.mark.parametrize("devices", [1, 2])
async def test_a_short_storm_dead_letters_nothing(devices: int) -> None:
    """Before: a refuse-everything burst that happened to meet lone samples of one device only
    dead-lettered them at once (seen in CI's chaos round: 5 samples, 1220). A burst of many
    batches just under PERSIST_S, then a 200: nothing dead-lettered, whatever the devices."""
    batch = of_devices(devices, 8)
    queue = MemoryQueue(batch)
    storm = [True]
    handler, _, clock = clocked_handler(
        queue, lambda m, e: (1220, "busy") if storm[0] else (200, "")
    )
    for _ in range(6):
        await send(handler, batch)
        clock[0] += (PERSIST_S - 1) / 5
    # Every other bisection sets its lone refusals aside instead of a storm (a storm gives
    # them back to the flow).
    assert not queue.rejected and handler.storms == 3
    storm[0] = False
    clock[0] += PERSIST_S
    await send(handler, batch)
    assert not queue.rejected and len(queue.acked) == 8


async def test_a_lone_sample_refused_with_no_200_in_between_stays_queued() -> None:
    """One live sample refused while nothing else is sent: no evidence either way, so neither
    the data nor the hub is believed yet; the sample stays queued, held aside for the evidence
    (tests/unit/test_held_refusal.py), and nothing backs off."""
    batch = rows("a", 1)
    queue = MemoryQueue(batch)
    handler, _, _ = handler_for(queue, lambda m, e: (1220, "busy"))
    await send(handler, batch)
    assert not queue.rejected and len(queue.rows) == 1 and handler.storms == 0
    assert handler.holding.skips(batch[0].id) and not handler.rewind


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


@pytest.mark.parametrize("devices", [1, 2])
@pytest.mark.parametrize("outage", ["timeout", "uplink_down", "nothing_sent"])
async def test_two_short_storms_around_an_outage_dead_letter_nothing(
    outage: str, devices: int
) -> None:
    """Good samples: a 1220 burst, an outage (or a long backoff), another burst 61 s after
    the first. Before: the second dead-lettered all 8 of a one-device gateway (found by an
    adversary: the rule measured 'no 200 since the first refusal', which an outage satisfies)."""
    batch = of_devices(devices, 8)
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


@pytest.mark.parametrize("batch_size", [1, 2, 3])
async def test_small_batches_of_a_device_refused_for_good_are_dead_lettered(
    batch_size: int,
) -> None:
    """forward.batch_max_samples <= 3: a bisection never held 4 lone samples, so a one-device
    gateway whose model is wrong retried for ever. The lone refusals add up over the run."""
    batch = rows("a", batch_size)
    queue = MemoryQueue(batch)
    handler, _, clock = clocked_handler(queue, lambda m, e: (1204, "model"))
    start = clock[0]
    while not queue.rejected and clock[0] - start <= PERSIST_S + 2 * STEP_S:
        await send(handler, batch)
        assert not queue.rejected or clock[0] - start >= PERSIST_S
        clock[0] += STEP_S
    assert sorted(queue.rejected) == [r.id for r in batch] and not queue.rows
    assert clock[0] - STEP_S - start == PERSIST_S  # at the first batch refused 60 s on


@pytest.mark.parametrize("devices", [2, 3])
async def test_devices_refused_for_good_are_dead_lettered_and_said_once(
    devices: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Two (or more) devices with the same wrong model and nothing else: every bisection met
    several devices, so it was always a storm, for ever. A refusal that persists is the data's;
    the log says so once, with the way back."""
    batch = of_devices(devices, 12)
    queue = MemoryQueue(batch)
    handler, session, clock = clocked_handler(queue, lambda m, e: (1204, "model"))
    for _ in range(PERSIST_TIMES - 1):
        await send(handler, batch)
        assert not queue.rejected and len(queue.rows) == 12
        clock[0] += PERSIST_S / 2
    assert len(session.requests) < 10 * (PERSIST_TIMES - 1)  # each bisection stopped early
    await send(handler, batch)  # the third batch, 60 s after the first
    assert sorted(queue.rejected) == sorted(r.id for r in batch) and not queue.rows
    assert {code for code, _ in queue.rejected.values()} == {1204}
    assert handler.storms == PERSIST_TIMES - 2  # the first bisection set its refusals aside
    said = [r.getMessage() for r in caplog.records if "refusals_persist" in r.getMessage()]
    assert len(said) == 1 and "devices=2" in said[0]  # each bisection stopped at the second
    assert "gatewayd queue requeue-rejected --code 1204" in said[0]


async def test_a_persisting_refusal_dead_letters_a_later_batch_at_once() -> None:
    """Once the refusal persists, a new batch's lone refusals are not held for more evidence."""
    queue = MemoryQueue(of_devices(2, 8) + rows("c", 4, start_id=500))
    handler, _, clock = clocked_handler(queue, lambda m, e: (1204, "model"))
    for _ in range(PERSIST_TIMES):
        await send(handler, of_devices(2, 8))
        clock[0] += PERSIST_S / 2
    storms = handler.storms
    await send(handler, rows("c", 4, start_id=500))
    assert len(queue.rejected) == 12 and not queue.rows and handler.storms == storms


async def test_different_codes_persist_each_on_their_own() -> None:
    """One device refused 1204, another 1206, nothing taken: each code's run persists."""
    batch = of_devices(2, 8)
    queue = MemoryQueue(batch)
    handler, _, clock = clocked_handler(
        queue, lambda m, e: (1204 if e[0]["deviceKey"] == "a" else 1206, "no")
    )
    for _ in range(PERSIST_TIMES):  # one lone sample of each code a batch: 3 < PERSIST_LONE_MIN
        await send(handler, batch)
        assert not queue.rejected
        clock[0] += PERSIST_S / 2
    await send(handler, batch)
    assert {i: c for i, (c, _) in queue.rejected.items()} == {
        r.id: 1204 if r.device_key == "a" else 1206 for r in batch
    }


async def test_a_200_in_between_starts_the_run_again() -> None:
    """The hub took a sample 40 s into the refusals: the minute counts again from there (at
    t=140 s; without the 200 the refusals would have persisted at t=160 s)."""
    batch = of_devices(2, 8)
    queue = MemoryQueue([*batch, *rows("ok", 1, start_id=900)])
    handler, _, clock = clocked_handler(queue, hub_refusing(1204, lambda e: e["deviceKey"] != "ok"))
    for step in range(6):
        if step == 2:
            await send(handler, rows("ok", 1, start_id=900))
        await send(handler, batch)
        assert not queue.rejected or step == 5, step
        clock[0] += STEP_S
    assert len(queue.rejected) == 8 and queue.acked == [900]


def test_the_confirmation_needs_more_than_one_batch_and_one_sample() -> None:
    """The thresholds the docs quote; a change must be a decision, not an accident."""
    assert (PERSIST_TIMES, PERSIST_S, PERSIST_LONE_MIN) == (3, 60.0, 4)
