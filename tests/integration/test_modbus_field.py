"""Serial-line faults that pymodbus's own server never shows: late answers, wrong unit ids, a
slow neighbour on the same RS-485 pair. A reading must never be taken from an answer that may
belong to another request; a slow device must not make another one fail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from gatewayd.acquire.poller import build_pollers
from gatewayd.config import DeviceConfig, PointConfig, load_config
from gatewayd.model import Sample
from gatewayd.sim.modbus import SERIAL_NUMBER, ModbusSimulator
from tests.support.cli import gatewayd_cli
from tests.support.example import finished_example_text
from tests.support.rtu_lab import (
    SERIAL,
    four_point_device,
    four_point_meter,
    line_factory,
    poll_rounds,
    poll_times,
    wrong_values,
)
from tests.support.rtu_slave import Unit

ROOT = Path(__file__).parents[2]
A_VALUE = (0x0001, 0x0203)  # 66051 as uint32 ABCD
B_VALUE = (0x0000, 0x0999)  # 2457


def meter(unit_id: int, late_on_register_0_s: float = 0.0) -> Unit:
    unit = Unit(unit_id)
    holding = unit.tables["holding"]
    holding.update({0: A_VALUE[0], 1: A_VALUE[1], 10: B_VALUE[0], 11: B_VALUE[1]})
    if late_on_register_0_s:
        late = late_on_register_0_s
        unit.delay = lambda table, address, count: (
            late if table == "holding" and address <= 0 < address + count else 0.0
        )
    return unit


def device(connection: dict[str, Any], unit_id: int = 1, **modbus: Any) -> DeviceConfig:
    return DeviceConfig(
        name=f"meter-{unit_id}",
        product_key="p",
        device_key=f"d{unit_id}",
        interval_s=2.0,
        modbus={**connection, "unit_id": unit_id, "timeout_s": 0.5, "retries": 1, **modbus},
        points=[
            {"id": "A", "address": 0, "type": "uint32"},
            {"id": "B", "address": 10, "type": "uint32"},
        ],
    )


@pytest.mark.parametrize("transport", SERIAL)
async def test_a_late_answer_never_becomes_another_reads_value(
    transport: str, line_factory: Any
) -> None:
    """The slave answers reads of register 0 after 0.7 s (timeout 0.5 s) and answers every
    request it gets, re-sends included. B must be B's value or missing, never A's."""
    _, connection = line_factory(transport, [meter(1, late_on_register_0_s=0.7)])
    samples = await poll_times([device(connection)], rounds=4)
    b_values = [s.points["B"] for s in samples if "B" in s.points]
    a_values = [s.points["A"] for s in samples if "A" in s.points]
    assert set(b_values) <= {B_VALUE[0] << 16 | B_VALUE[1]}, b_values
    assert set(a_values) <= {A_VALUE[0] << 16 | A_VALUE[1]}, a_values


@pytest.mark.parametrize("transport", SERIAL)
async def test_an_answer_from_another_unit_is_not_taken(transport: str, line_factory: Any) -> None:
    """A converter that answers unit 1's reads as unit 3: no value may come from it."""
    unit = meter(1)
    unit.answer_as = 3
    _, connection = line_factory(transport, [unit])
    samples = await poll_times([device(connection)], rounds=2)
    assert samples == []


@pytest.mark.parametrize("transport", SERIAL)
async def test_a_slow_slave_does_not_make_its_neighbour_fail(
    transport: str, line_factory: Any
) -> None:
    """Two slaves on one line; unit 2 answers register 0 late. Unit 1 keeps every reading right."""
    _line, connection = line_factory(transport, [meter(1), meter(2, late_on_register_0_s=0.7)])
    configs = [device(connection, 1), device(connection, 2)]
    samples = await poll_times(configs, rounds=3)
    good = [s for s in samples if s.device_key == "d1"]
    assert len(good) == 3
    for sample in good:
        assert sample.points == {
            "A": A_VALUE[0] << 16 | A_VALUE[1],
            "B": B_VALUE[0] << 16 | B_VALUE[1],
        }
    for sample in (s for s in samples if s.device_key == "d2"):
        assert (
            sample.points.get("B", B_VALUE[0] << 16 | B_VALUE[1]) == B_VALUE[0] << 16 | B_VALUE[1]
        )
        assert (
            sample.points.get("A", A_VALUE[0] << 16 | A_VALUE[1]) == A_VALUE[0] << 16 | A_VALUE[1]
        )


def write_poll_config(path: Path, connection: dict[str, Any], points: list[dict[str, Any]]) -> Path:
    lines = ['[gateway]\nproduct_key = "g"\ndevice_key = "g"\ndevice_secret = "s"']
    lines.append('[[devices]]\nname = "meter-1"\nproduct_key = "p"\ndevice_key = "d1"')
    modbus = {**connection, "unit_id": 1, "timeout_s": 0.5, "retries": 0}
    lines.append(
        "[devices.modbus]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in modbus.items())
    )
    for point in points:
        lines.append(
            "[[devices.points]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in point.items())
        )
    path.write_text("\n\n".join(lines) + "\n")
    return path


async def gatewayd_poll(config: Path) -> tuple[int, str]:
    return await gatewayd_cli("poll", "-c", str(config))


async def test_poll_names_each_refused_read_and_fails(tmp_path: Path, line_factory: Any) -> None:
    """An unmapped address: `poll` shows the good points, names the refused read with its
    exception code and name, and exits non-zero (before: exit 0, the point simply missing)."""
    _, connection = line_factory("rtu_over_tcp", [meter(1)])
    config = write_poll_config(
        tmp_path / "c.toml",
        connection,
        [
            {"id": "A", "address": 0, "type": "uint32"},
            {"id": "Ghost", "address": 40, "type": "uint16"},
        ],
    )
    code, out = await gatewayd_poll(config)
    assert code == 1, out
    assert re.search(r"A\s+│\s+66051", out), out
    assert "meter-1.Ghost" in out and "02 illegal data address" in out and "holding 40+1" in out


async def test_a_refused_read_is_logged_once_counted_always_and_its_recovery_once(
    line_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    unit = meter(1)
    _, connection = line_factory("rtu_over_tcp", [unit])
    config = device(connection, retries=0)
    config = config.model_copy(update={"points": [*config.points, PointConfig(id="C", address=20)]})
    caplog.set_level(logging.INFO, logger="gatewayd.acquire.poller")
    samples: list[Sample] = []
    pollers, endpoints = build_pollers([config], samples.append)
    poller = pollers[0]
    try:
        for _ in range(3):
            await poller.poll()
        unit.tables["holding"][20] = 7  # the technician maps it (fixes the config)
        for _ in range(2):
            await poller.poll()
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    refused = [r for r in caplog.records if r.getMessage().startswith("read_refused")]
    recovered = [r for r in caplog.records if r.getMessage().startswith("read_recovered")]
    assert len(refused) == 1 and "device=meter-1" in refused[0].getMessage()
    assert "02 illegal data address" in refused[0].getMessage()
    assert len(recovered) == 1
    assert poller.refused_reads == 3 and poller.refused_polls == 3
    assert [s.points.get("C") for s in samples] == [None, None, None, 7, 7]
    assert poller.failures == 0  # refusing is alive, not down


@pytest.mark.parametrize("code", [0x0A, 0x0B])
async def test_gateway_path_exceptions_mean_a_dead_device(code: int, line_factory: Any) -> None:
    """0A/0B come from a TCP gateway whose slave is unreachable: back off, device down."""
    unit = meter(1)
    unit.exception = code
    _, connection = line_factory("rtu_over_tcp", [unit])
    pollers, endpoints = build_pollers([device(connection, retries=0)], lambda s: None)
    try:
        await pollers[0].poll()
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    assert pollers[0].failures == 1 and pollers[0].retry_at > 0


async def test_the_example_config_reads_every_point_of_the_simulated_meter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.example.toml against `gatewayd sim modbus`: every point read, none refused, the
    values those of the meter (before: Energy 65863680 from CDAB, Alarm and Serial unmapped)."""
    example = finished_example_text(tmp_path, monkeypatch)
    simulator = ModbusSimulator(unit_ids=(1,))
    port = await simulator.start()
    try:
        text = example.replace('host = "192.0.2.10"', 'host = "127.0.0.1"')
        text = text.replace("port = 502\n", f"port = {port}\n")
        path = tmp_path / "example.toml"
        path.write_text(text)
        settings = load_config(path)
        poller = build_pollers(settings.devices, lambda s: None)[0][0]
        try:
            first = await poller.read_sample()
            second = await poller.read_sample()
        finally:
            poller.endpoint.close()
    finally:
        await simulator.stop()
    assert poller.unread == {} and poller.refused_reads == 0
    expected_ids = {p.id for p in settings.devices[0].points}
    assert set(first.points) == expected_ids
    assert first.points["Serial"] == SERIAL_NUMBER
    assert 1000 < first.points["Energy"] < second.points["Energy"] < 2000
    assert isinstance(first.points["Alarm"], bool)


async def test_the_simulated_meter_refuses_unmapped_addresses() -> None:
    simulator = ModbusSimulator(unit_ids=(1,))
    port = await simulator.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0)
    try:
        await client.connect()
        mapped = await client.read_holding_registers(0, count=7, device_id=1)
        gap = await client.read_holding_registers(6, count=2, device_id=1)
        beyond = await client.read_input_registers(2, count=1, device_id=1)
    finally:
        client.close()
        await simulator.stop()
    assert not mapped.isError()
    assert gap.isError() and gap.exception_code == 2
    assert beyond.isError() and beyond.exception_code == 2


async def test_the_journal_gets_our_lines_not_the_librarys(
    tmp_path: Path, line_factory: Any
) -> None:
    """A silent unit id on a line: `poll` prints one line naming the device and the failure, and
    none of pymodbus's own error lines or frame dumps (before: `logger=pymodbus.logging`)."""
    _, connection = line_factory("rtu_over_tcp", [meter(1)])
    connection = {**connection}
    config = write_poll_config(tmp_path / "c.toml", connection, [{"id": "A", "address": 0}])
    config.write_text(config.read_text().replace("unit_id = 1", "unit_id = 9"))
    code, out = await gatewayd_poll(config)
    assert code == 1
    assert "meter-1" in out and "no valid answer to holding 0+1" in out
    assert "pymodbus" not in out and ">>>>>" not in out and "No response received" not in out


async def test_report_by_exception_leaves_out_steady_points_and_empty_samples(
    line_factory: Any,
) -> None:
    _, connection = line_factory("rtu_over_tcp", [meter(1)])
    config = device(connection, retries=0)
    banded = [p.model_copy(update={"deadband": 1.0}) for p in config.points]
    config = config.model_copy(update={"points": banded})
    samples: list[Sample] = []
    pollers, endpoints = build_pollers([config], samples.append)
    try:
        for _ in range(3):
            await pollers[0].poll()
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    assert [s.points for s in samples] == [{"A": 66051, "B": 2457}]  # steady: one sample only
    assert pollers[0].report_by_exception.suppressed == 4


# Found by an adversarial review: answers later than twice the timeout, slaves that answer
# twice, a stale frame before each answer, and a TCP answer with transaction id 0.
__all__ = ["line_factory"]  # the fixture, used by name


@pytest.mark.parametrize("transport", SERIAL)
@pytest.mark.parametrize(("late_s", "retries"), [(0.65, 1), (0.95, 2), (0.8, 3)])
async def test_answers_far_later_than_the_timeout_never_give_wrong_values(
    transport: str, late_s: float, retries: int, line_factory: Any
) -> None:
    """2-3x the timeout late, with retries queueing more answers in the busy slave (before the
    fix: R20 = 1000, R30 = 1020 and the like, on both transports, nothing logged)."""
    _, connection = line_factory(transport, [four_point_meter(late_s=late_s)])
    samples = await poll_times([four_point_device(connection, retries=retries)], rounds=3)
    assert wrong_values(samples) == []


@pytest.mark.parametrize("transport", SERIAL)
@pytest.mark.parametrize("fault", ["duplicate", "replay"])
async def test_a_slave_that_answers_twice_never_gives_wrong_values(
    transport: str, fault: str, line_factory: Any
) -> None:
    unit = four_point_meter()
    if fault == "duplicate":
        unit.duplicate_after = 0.05
    else:
        unit.replay_previous = True  # a stale answer comes first, then the real one
    _, connection = line_factory(transport, [unit])
    samples = await poll_times([four_point_device(connection, retries=1)], rounds=3)
    assert wrong_values(samples) == []


async def test_a_slow_slave_does_not_mark_its_neighbour_down(line_factory: Any) -> None:
    """Unit 2 answers 2x the timeout late; unit 1 on the same line is never 'down' for it."""
    _, connection = line_factory("rtu", [four_point_meter(1), four_point_meter(2, late_s=0.65)])
    configs = [
        four_point_device(connection, 1, retries=0),
        four_point_device(connection, 2, retries=0),
    ]
    samples: list[Sample] = []
    pollers, endpoints = build_pollers(configs, samples.append)
    try:
        for _ in range(4):
            await asyncio.gather(*(p.poll() for p in pollers))
            pollers[1].retry_at = 0.0
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    assert pollers[0].failures == 0
    assert wrong_values(samples) == []
    assert len([s for s in samples if s.device_key == "d1"]) >= 3


async def test_devices_sharing_a_line_keep_their_own_timeout_and_retries(line_factory: Any) -> None:
    """meter-1 0.2 s / 0 retries, meter-2 1.0 s / 2 retries answering in 0.5 s (before: meter-2
    was read with meter-1's 0.2 s and never answered in time)."""
    _, connection = line_factory("rtu_over_tcp", [four_point_meter(1), four_point_meter(2, 0.5)])
    configs = [
        four_point_device(connection, 1, timeout_s=0.2, retries=0),
        four_point_device(connection, 2, timeout_s=1.0, retries=2),
    ]
    samples = await poll_times(configs, rounds=1)
    assert sorted(s.device_key for s in samples) == ["d1", "d2"]
    assert wrong_values(samples) == []


async def test_a_tcp_answer_with_transaction_id_zero_is_not_taken() -> None:
    """A Modbus TCP server that answers every request with transaction id 0 and a fixed value:
    pymodbus accepts tid 0 for any request; gatewayd must not."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(7)
                _tid, _proto, length, unit = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                count = struct.unpack(">H", pdu[3:5])[0]
                body = bytes([pdu[0], 2 * count]) + struct.pack(">H", 4242) * count
                writer.write(struct.pack(">HHHB", 0, 0, len(body) + 1, unit) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = {"transport": "tcp", "host": "127.0.0.1", "port": port}
    try:
        samples = await poll_times([four_point_device(connection, retries=0)], rounds=1)
    finally:
        server.close()
        await server.wait_closed()
    assert samples == []


async def test_a_point_that_turns_unusable_is_logged_once_and_its_recovery_once(
    line_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """NaN from the device: one point_unusable line, not one per poll (before: debug only)."""
    unit = Unit(1)
    nan = struct.unpack(">HH", struct.pack(">f", float("nan")))
    unit.tables["holding"].update({0: nan[0], 1: nan[1]})
    _, connection = line_factory("rtu_over_tcp", [unit])
    config = DeviceConfig(
        name="meter-1",
        product_key="p",
        device_key="d1",
        interval_s=2.0,
        modbus={**connection, "unit_id": 1, "timeout_s": 0.5, "retries": 0},
        points=[{"id": "F", "address": 0, "type": "float32"}],
    )
    caplog.set_level(logging.INFO, logger="gatewayd.acquire.poller")
    pollers, endpoints = build_pollers([config], lambda s: None)
    try:
        for _ in range(3):
            await pollers[0].poll()
        unit.tables["holding"].update({0: 0x4120, 1: 0})  # 10.0
        await pollers[0].poll()
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("point_unusable")]) == 1
    assert len([m for m in messages if m.startswith("point_usable")]) == 1


@pytest.mark.parametrize("transport", SERIAL)
async def test_one_late_answer_from_a_slave_that_drops_requests_while_busy(
    transport: str, line_factory: Any
) -> None:
    """Found by the second adversarial round: the first answer to holding 10 comes 2 s late
    (6.7x the timeout) and the slave ignores requests meanwhile. Before: gatewayd gave up on
    the owed answer after 3 timeouts, asked holding 0, and took R10's late answer for R0."""
    unit = four_point_meter()
    unit.ignore_while_busy = True
    first = [True]

    def delay(table: str, address: int, count: int) -> float:
        if address == 10 and first[0]:
            first[0] = False
            return 2.0
        return 0.0

    unit.delay = delay
    _, connection = line_factory(transport, [unit])
    samples: list[Sample] = []
    pollers, endpoints = build_pollers(
        [four_point_device(connection, timeout_s=0.3, retries=0)], samples.append
    )
    try:
        for _ in range(6):  # about once a second, as a 1 s interval would
            await pollers[0].poll()
            pollers[0].retry_at = 0.0
            await asyncio.sleep(0.7)
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    assert wrong_values(samples) == []
    assert samples, "the slave recovered and was read again"


async def test_an_answer_delivered_in_pieces_is_read(line_factory: Any) -> None:
    """A converter delivering a frame in 4-byte bursts 17 ms apart (before: '13 bytes in 4
    frames, expected 13 in 1', every poll discarded)."""
    unit = four_point_meter()
    unit.chunks = (4, 0.017)
    _, connection = line_factory("rtu_over_tcp", [unit])
    config = four_point_device(connection, timeout_s=0.5, retries=0)
    config = config.model_copy(
        update={"points": [PointConfig(id=f"R{a}", address=a) for a in (0, 1, 2, 3)]}
    )
    unit.tables["holding"].update({1: 1001, 2: 1002, 3: 1003})
    samples = await poll_times([config], rounds=2)
    assert [s.points for s in samples] == [{"R0": 1000, "R1": 1001, "R2": 1002, "R3": 1003}] * 2


@pytest.mark.parametrize("transport", SERIAL)
async def test_a_wrong_unit_id_on_a_serial_line_is_named_as_no_answer(
    transport: str, line_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody answers unit 5: the reason is the timeout, as the commissioning table says. Before:
    the retry found the unit still owing and the reason named only that ("unit 5 still owes the
    answer to a request 1.0 s ago ..."), which points nowhere near the unit id."""
    _, connection = line_factory(transport, [meter(1)])
    with caplog.at_level(logging.WARNING, logger="gatewayd.acquire.poller"):
        samples, _ = await poll_rounds([device(connection, unit_id=5, retries=1)], rounds=1)
    reasons = [r.getMessage() for r in caplog.records if "device_down" in r.getMessage()]
    assert samples == [] and len(reasons) == 1, reasons
    assert re.search(
        r"reason='no valid answer to holding 0\+\d+: no answer within 0.5 s", reasons[0]
    )
