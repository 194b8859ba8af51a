"""Frames on a serial line are told apart by length and CRC, not by silence (found by a third
adversarial round). Each case below once gave a wrong value, or failed a healthy device, because
a noise byte, the second half of a neighbour's answer, an answer under the wrong unit id, a
repeater's copy, two answers in one burst or a chatty device was taken for something it was not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from gatewayd.acquire.poller import build_pollers
from gatewayd.config import PointConfig
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


def two_point_device(connection: dict[str, Any], **modbus: Any) -> Any:
    config = four_point_device(connection, **modbus)
    points = [PointConfig(id="R0", address=0), PointConfig(id="R10", address=10)]
    return config.model_copy(update={"points": points})


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


# Found by a fourth adversarial round: a repeater's copy paid for an answer, or was taken for
# one, while the real answer came later than the timeout.


@pytest.mark.parametrize("transport", SERIAL)
@pytest.mark.parametrize("late_s", [0.31, 1.0])
async def test_a_copy_is_not_taken_when_the_real_answer_is_late(
    transport: str, late_s: float, line_factory: Any
) -> None:
    """Every answer comes again 0.1 s later (a repeater); R10's answer comes after the timeout
    (0.3 s). R0's copy lands in R10's window. Before: R10 = 1000 in every poll, exit 0."""
    unit = four_point_meter()
    unit.delay = lambda table, address, count: late_s if address == 10 else 0.0
    unit.duplicate_after = 0.1
    _, connection = line_factory(transport, [unit])
    for retries in (0, 1):
        config = two_point_device(connection, retries=retries)  # R10 is the poll's last read
        samples, _ = await poll_rounds([config], rounds=3, gap_s=0.5)
        assert wrong_values(samples) == [], retries


@pytest.mark.parametrize("transport", SERIAL)
async def test_a_copy_does_not_pay_for_an_owed_answer(transport: str, line_factory: Any) -> None:
    """R10's answer comes 0.9 s late, once; every answer comes again 0.4 s later. R0's copy
    arrives while R10's answer is owed. Before: the copy paid the debt and R10's late answer
    was taken for the next R0 (R0 = 1010 in 1 of 4 polls)."""
    unit = four_point_meter()
    late_once(unit, 10, 0.9)
    unit.duplicate_after = 0.4
    _, connection = line_factory(transport, [unit])
    samples = await poll_times([four_point_device(connection, retries=0)], rounds=5)
    assert wrong_values(samples) == []


async def test_two_reads_with_the_same_answer_are_both_read(line_factory: Any) -> None:
    """Two reads whose answers are the same bytes (two zero registers) are no copies: after one
    check (the unit quiet for a timeout, the read asked again) both are read."""
    unit = Unit(1)
    unit.tables["holding"].update({0: 0, 10: 0})
    _, connection = line_factory("rtu", [unit])
    config = two_point_device(connection, retries=0)
    samples, _ = await poll_rounds([config], rounds=2)
    assert [s.points for s in samples] == [{"R0": 0, "R10": 0}] * 2


EMBEDDED = frame(2, 0x1234) + b"\x00"  # 8 bytes: four registers that hold a whole unit-2 frame


@pytest.mark.parametrize("transport", SERIAL)
async def test_a_frame_inside_an_answer_in_pieces_is_no_frame(
    transport: str, line_factory: Any
) -> None:
    """Unit 1's four registers hold the bytes of a whole unit-2 frame and its answers arrive in
    pieces. Before: the inner frame was taken, unit 1's answer counted as noise, unit 1 failed
    every poll and unit 2 got strays it never sent."""
    registers = {a: int.from_bytes(EMBEDDED[2 * a : 2 * a + 2], "big") for a in range(4)}
    unit = Unit(1)
    unit.tables["holding"].update(registers)
    unit.chunks = (3, 0.005)
    neighbour = four_point_meter(2)
    _, connection = line_factory(transport, [unit, neighbour])
    config = four_point_device(connection, 1).model_copy(
        update={"points": [PointConfig(id=f"R{a}", address=a) for a in range(4)]}
    )
    samples, pollers = await poll_rounds([config, four_point_device(connection, 2)], rounds=3)
    assert [s.points for s in samples if s.device_key == "d1"] == [
        {f"R{a}": v for a, v in registers.items()}
    ] * 3
    assert pollers[1].discarded == 0


async def test_a_sample_is_stamped_when_its_reads_completed_not_after_the_hold(
    line_factory: Any,
) -> None:
    """The poll is held one timeout (0.3 s) after its last request; the sample's time is when
    the reads completed (before: up to one timeout later)."""
    _, connection = line_factory("rtu", [four_point_meter()])
    samples: list[Sample] = []
    (poller,), endpoints = build_pollers([four_point_device(connection)], samples.append)
    try:
        await poller.poll()
        returned_ms = time.time() * 1000
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    assert len(samples) == 1
    assert returned_ms - samples[0].ts_ms >= 200


async def test_one_serial_port_under_two_names_is_one_line(
    tmp_path: Path, line_factory: Any
) -> None:
    _, connection = line_factory("rtu", [four_point_meter(1), four_point_meter(2)])
    alias = tmp_path / "ttyALIAS"
    alias.symlink_to(connection["serial_port"])
    configs = [
        four_point_device(connection, 1),
        four_point_device({**connection, "serial_port": str(alias)}, 2),
    ]
    _pollers, endpoints = build_pollers(configs, lambda sample: None)
    for endpoint in endpoints.values():
        endpoint.close()
    assert len(endpoints) == 1


def coil_device(connection: dict[str, Any]) -> Any:
    """Coils 768 and 784 in one read of 17: the request's own bytes parse as a whole answer."""
    config = four_point_device(connection, retries=0, max_gap=20)
    points = [
        PointConfig(id="C768", table="coil", address=768, type="bool"),
        PointConfig(id="C784", table="coil", address=784, type="bool"),
    ]
    return config.model_copy(update={"points": points})


def with_local_echo(config: Any) -> Any:
    return config.model_copy(
        update={"modbus": config.modbus.model_copy(update={"local_echo": True})}
    )


def echo_unit() -> Unit:
    unit = four_point_meter(1)
    unit.tables["coil"].update({a: 1 if a == 768 else 0 for a in range(768, 785)})
    return unit


@pytest.mark.parametrize("transport", SERIAL)
async def test_a_local_echo_is_never_an_answer(
    transport: str, line_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A local-echo adapter hands every request back. With the unit dead, before: 3 of 3 polls
    'read' C768 = False, C784 = True from the request's own bytes; now the unit fails. With a
    live unit behind it and no `local_echo` key, no read is trusted, and the reason says which
    key to set (before: "answers out of step", nothing an operator could act on)."""
    _, connection = line_factory(transport, [], echo=True)
    samples, pollers = await poll_rounds([coil_device(connection)], rounds=2)
    assert samples == [] and pollers[0].failures >= 1, (pollers[0].discarded, pollers[0].skipped)
    _, connection = line_factory(transport, [echo_unit()], echo=True)
    with caplog.at_level(logging.WARNING, logger="gatewayd.acquire.poller"):
        samples, pollers = await poll_rounds([coil_device(connection)], rounds=2)
    assert samples == [] and pollers[0].discarded >= 1
    reasons = [r.getMessage() for r in caplog.records if r.getMessage().startswith("polls_")]
    assert reasons and all("set modbus.local_echo = true" in r for r in reasons), reasons
    down = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device_down")]
    assert all("set modbus.local_echo = true" in r for r in down), down


@pytest.mark.parametrize("transport", SERIAL)
async def test_a_register_read_behind_an_echo_says_to_set_local_echo(
    transport: str, line_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A register read's echo is no frame: pymodbus never sees an answer it likes, and the read
    timed out as if the unit were dead ("no answer within 0.3 s", found by an adversary)."""
    _, connection = line_factory(transport, [echo_unit()], echo=True)
    with caplog.at_level(logging.WARNING, logger="gatewayd.acquire.poller"):
        samples, _ = await poll_rounds([four_point_device(connection, retries=0)], rounds=1)
    reasons = [r.getMessage() for r in caplog.records if "device=meter-1" in r.getMessage()]
    assert samples == [] and reasons, reasons
    assert all("set modbus.local_echo = true" in r for r in reasons), reasons


@pytest.mark.parametrize("chunks", [(2, 0.01), (1, 0.002)])
async def test_local_echo_set_where_the_adapter_does_not_echo_still_reads(
    chunks: tuple[int, float], line_factory: Any
) -> None:
    """The answer begins with the request's unit and function: held as a possible echo, then
    handed on whole. Before: pymodbus's own echo handling dropped those bytes (0 of 3 polls)."""
    unit = four_point_meter(1)
    unit.chunks = chunks
    _, connection = line_factory("rtu", [unit], echo=False)
    samples, pollers = await poll_rounds([with_local_echo(four_point_device(connection))], rounds=3)
    want = {f"R{a}": v for a, v in FOUR.items()}
    assert [s.points for s in samples] == [want] * 3, (pollers[0].discarded, pollers[0].failures)


@pytest.mark.parametrize("device", [coil_device, four_point_device])
async def test_a_local_echo_adapter_is_read_with_local_echo_set(
    device: Any, line_factory: Any
) -> None:
    """`local_echo = true`: the request handed back first is no part of the answer, so every
    read is the unit's own (coils whose request parses as an answer, and registers)."""
    _, connection = line_factory("rtu", [echo_unit()], echo=True)
    config = with_local_echo(device(connection))
    samples, pollers = await poll_rounds([config], rounds=3)
    want = (
        {"C768": True, "C784": False}
        if device is coil_device
        else {f"R{a}": v for a, v in FOUR.items()}
    )
    assert [s.points for s in samples] == [want] * 3, (pollers[0].discarded, pollers[0].failures)
    assert pollers[0].endpoint.doubtful == 0


async def test_local_echo_set_on_a_dead_unit_reads_nothing(line_factory: Any) -> None:
    """The echo of a read whose request parses as an answer is never taken for the answer."""
    _, connection = line_factory("rtu", [], echo=True)
    config = with_local_echo(coil_device(connection))
    samples, pollers = await poll_rounds([config], rounds=2)
    assert samples == [] and pollers[0].failures >= 1
