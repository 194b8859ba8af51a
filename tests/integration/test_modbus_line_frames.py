"""Frames on a serial line are told apart by length and CRC, not by silence (found by a third
adversarial round). Each case below once gave a wrong value, or failed a healthy device, because
a noise byte, the second half of a neighbour's answer, an answer under the wrong unit id, a
repeater's copy, two answers in one burst or a chatty device was taken for something it was not.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gatewayd.acquire.poller import build_pollers
from gatewayd.model import Sample
from tests.support.rtu_lab import (
    FOUR,
    SERIAL,
    four_point_device,
    four_point_meter,
    line_factory,
    poll_rounds,
    poll_times,
    wrong_values,
)
from tests.support.rtu_slave import Unit, crc16

__all__ = ["line_factory"]  # the fixture, used by name


def late_once(unit: Unit, address: int, late_s: float) -> None:
    """The first read of `address` is answered `late_s` late; the slave drops requests while
    busy, so the late answer is the next frame it sends."""
    unit.ignore_while_busy = True
    first = [True]

    def delay(table: str, a: int, count: int) -> float:
        if a == address and first[0]:
            first[0] = False
            return late_s
        return 0.0

    unit.delay = delay


def frame(unit_id: int, *words: int) -> bytes:
    adu = bytes([unit_id, 3, 2 * len(words)]) + b"".join(w.to_bytes(2, "big") for w in words)
    return adu + crc16(adu)


@pytest.mark.parametrize("transport", SERIAL)
async def test_a_noise_byte_does_not_pay_for_an_owed_answer(
    transport: str, line_factory: Any
) -> None:
    """R10's answer comes 0.9 s late (timeout 0.3 s); 0.4 s after the request a noise byte
    equal to the unit id arrives. Before: the byte paid the debt, R0 was asked, and R10's
    late answer was taken for it (R0 = 1010)."""
    unit = four_point_meter()
    late_once(unit, 10, 0.9)
    unit.also_send = lambda table, address, count: [(0.4, b"\x01")] if address == 10 else []
    _, connection = line_factory(transport, [unit])
    samples = await poll_times([four_point_device(connection, retries=0)], rounds=4)
    assert wrong_values(samples) == []
    assert samples, "the unit is read again once its late answer came"


@pytest.mark.parametrize("transport", SERIAL)
async def test_half_of_a_neighbours_answer_does_not_pay_for_an_owed_answer(
    transport: str, line_factory: Any
) -> None:
    """Unit 2's answers arrive in pieces 50 ms apart, the second piece starting with byte 01;
    unit 1 owes a late answer meanwhile. Before: the piece paid unit 1's debt and unit 1's late
    R10 answer was taken for its next read."""
    owing = four_point_meter(1)
    late_once(owing, 10, 0.9)
    neighbour = Unit(2)
    neighbour.tables["holding"].update({a: 0x0100 + a for a in FOUR})
    neighbour.chunks = (3, 0.05)  # unit, fc, count | high byte 01, low byte, CRC
    _, connection = line_factory(transport, [owing, neighbour])
    configs = [four_point_device(connection, 1, retries=0), four_point_device(connection, 2)]
    samples, _ = await poll_rounds(configs, rounds=4)
    assert wrong_values([s for s in samples if s.device_key == "d1"]) == []
    neighbour_values = [s.points for s in samples if s.device_key == "d2"]
    assert neighbour_values and all(
        v == {f"R{a}": 0x0100 + a for a in FOUR} for v in neighbour_values
    )


@pytest.mark.parametrize("transport", SERIAL)
async def test_an_answer_under_a_wrong_unit_id_does_not_pay_that_units_debt(
    transport: str, line_factory: Any
) -> None:
    """Unit 2 owes a late answer; a converter answers unit 3's reads as unit 2. Before: unit
    3's answer paid unit 2's debt, and unit 2's late R10 answer was taken for its next read."""
    owing = four_point_meter(2)
    late_once(owing, 10, 0.9)
    mislabelled = four_point_meter(3)
    mislabelled.answer_as = 2
    mislabelled.tables["holding"].update({a: 3000 + a for a in FOUR})
    _, connection = line_factory(transport, [owing, mislabelled])
    samples: list[Sample] = []
    configs = [
        four_point_device(connection, 2, retries=0),
        four_point_device(connection, 3, retries=0),
    ]
    (unit_2, unit_3), endpoints = build_pollers(configs, samples.append)
    try:
        for poller in (unit_2, unit_3, unit_2, unit_2):  # unit 3 is read while unit 2 owes
            await poller.poll()
            poller.retry_at = 0.0
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    assert [s for s in samples if s.device_key == "d3"] == []
    assert wrong_values(samples) == []


@pytest.mark.parametrize("transport", SERIAL)
async def test_a_repeaters_late_copy_is_not_taken_for_the_next_read(
    transport: str, line_factory: Any
) -> None:
    """Every answer comes 0.12 s after its request and again 0.1 s later (a repeater). The
    copy lands while the next read waits; the real answer comes after that read was checked.
    Before: every poll was shifted by one register (R10 = 1000, R20 = 1010, ...)."""
    unit = four_point_meter()
    unit.delay = lambda table, address, count: 0.12
    unit.duplicate_after = 0.1
    _, connection = line_factory(transport, [unit])
    samples, pollers = await poll_rounds(
        [four_point_device(connection, retries=0)], rounds=3, gap_s=0.5
    )
    assert wrong_values(samples) == []
    assert pollers[0].discarded >= 1  # the line's trouble is visible, not silent


@pytest.mark.parametrize("transport", SERIAL)
async def test_two_answers_in_one_burst_are_two_frames(transport: str, line_factory: Any) -> None:
    """Unit 1 owes R10's answer; it reaches the master glued in front of unit 2's answer (a
    converter's buffer). Before: the burst counted as one frame from unit 1, unit 2 kept a debt
    it did not have and failed every read for 10 s."""
    owing = four_point_meter(1)
    neighbour = four_point_meter(2)

    def never(table: str, address: int, count: int) -> float:
        if address == 10:  # the answer goes out through the neighbour's next write instead
            neighbour.prefix = frame(1, FOUR[10])
            return 60.0
        return 0.0

    owing.delay = never
    owing.ignore_while_busy = True
    _, connection = line_factory(transport, [owing, neighbour])
    configs = [four_point_device(connection, 1, retries=0), four_point_device(connection, 2)]
    samples, pollers = await poll_rounds(configs, rounds=3)
    assert pollers[1].failures == 0
    assert len([s for s in samples if s.device_key == "d2"]) >= 2
    assert wrong_values(samples) == []


@pytest.mark.parametrize("transport", SERIAL)
async def test_a_chatty_device_does_not_stall_the_line(transport: str, line_factory: Any) -> None:
    """An unpolled unit 9 sends a frame every 0.2 s unasked. Before: the line waited for a
    silence that never came (up to 60 s) and discarded every poll of unit 1."""
    line, connection = line_factory(transport, [four_point_meter(1)])
    line.babble(frame(9, 1234), every_s=0.2)
    samples, pollers = await poll_rounds(
        [four_point_device(connection, retries=1)], rounds=4, gap_s=0.1
    )
    assert wrong_values(samples) == []
    assert len(samples) >= 3, (len(samples), pollers[0].discarded, pollers[0].failures)


async def test_a_chatty_polled_device_holds_up_only_itself(line_factory: Any) -> None:
    """Unit 9 is polled too and keeps sending frames unasked every 0.2 s: its reads fail (it is
    never quiet for a timeout), within two timeouts each; unit 1 on the same line keeps its
    readings. Before: waiting for unit 9 to go quiet held the whole line for up to 60 s."""
    chatty = four_point_meter(9)
    line, connection = line_factory("rtu", [four_point_meter(1), chatty])
    line.babble(frame(9, 1234), every_s=0.2)
    configs = [four_point_device(connection, 9, retries=0), four_point_device(connection, 1)]
    started = asyncio.get_running_loop().time()
    samples, _ = await poll_rounds(configs, rounds=4, gap_s=0.1)
    elapsed = asyncio.get_running_loop().time() - started
    assert wrong_values(samples) == []
    assert len([s for s in samples if s.device_key == "d1"]) >= 3
    assert [s for s in samples if s.device_key == "d9"] == []  # never trusted while it chatters
    assert elapsed < 4 * (2 * 0.3 + 2 * 0.3 + 0.5) + 2.0, elapsed
