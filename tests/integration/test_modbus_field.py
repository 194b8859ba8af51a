"""Serial-line faults that pymodbus's own server never shows: late answers, wrong unit ids, a
slow neighbour on the same RS-485 pair. A reading must never be taken from an answer that may
belong to another request; a slow device must not make another one fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.acquire.poller import build_pollers
from gatewayd.config import DeviceConfig
from gatewayd.model import Sample
from tests.support.rtu_slave import RtuLine, Unit

SERIAL = ["rtu", "rtu_over_tcp"]
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


@pytest.fixture
def line_factory(tmp_path: Path) -> Iterator[Any]:
    lines: list[RtuLine] = []

    def make(transport: str, units: list[Unit]) -> tuple[RtuLine, dict[str, Any]]:
        line = RtuLine(tmp_path / f"line{len(lines)}", units)
        line.workdir.mkdir()
        lines.append(line)
        return line, line.start(transport)

    yield make
    for line in lines:
        line.stop()


async def poll_times(configs: list[DeviceConfig], rounds: int) -> list[Sample]:
    samples: list[Sample] = []
    pollers, endpoints = build_pollers(configs, samples.append)
    try:
        for _ in range(rounds):
            await asyncio.gather(*(p.poll() for p in pollers))
            for p in pollers:
                p.retry_at = 0.0  # poll again at once, breaker or not: more chances to go wrong
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    return samples


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
