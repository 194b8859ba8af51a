"""The field-fault lab shared by the serial-line tests: RTU lines of our own slaves, meters with
four registers whose values say which register they came from, and a loop that polls them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.acquire.poller import DevicePoller, build_pollers
from gatewayd.config import DeviceConfig
from gatewayd.model import Sample
from tests.support.rtu_slave import RtuLine, Unit

SERIAL = ["rtu", "rtu_over_tcp"]


@pytest.fixture
def line_factory(tmp_path: Path) -> Iterator[Any]:
    lines: list[RtuLine] = []

    def make(
        transport: str, units: list[Unit], echo: bool = False
    ) -> tuple[RtuLine, dict[str, Any]]:
        line = RtuLine(tmp_path / f"line{len(lines)}", units, echo)
        line.workdir.mkdir()
        lines.append(line)
        return line, line.start(transport)

    yield make
    for line in lines:
        line.stop()


async def poll_rounds(
    configs: list[DeviceConfig], rounds: int, gap_s: float = 0.0
) -> tuple[list[Sample], list[DevicePoller]]:
    """Poll every device `rounds` times together, `gap_s` apart; the samples and the pollers."""
    samples: list[Sample] = []
    pollers, endpoints = build_pollers(configs, samples.append)
    try:
        for _ in range(rounds):
            await asyncio.gather(*(p.poll() for p in pollers))
            for p in pollers:
                p.retry_at = 0.0  # poll again at once, breaker or not: more chances to go wrong
            await asyncio.sleep(gap_s)
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    return samples, pollers


async def poll_times(configs: list[DeviceConfig], rounds: int) -> list[Sample]:
    return (await poll_rounds(configs, rounds))[0]


FOUR = {a: 1000 + a for a in (0, 10, 20, 30)}


def four_point_meter(unit_id: int = 1, late_s: float = 0.0) -> Unit:
    unit = Unit(unit_id)
    unit.tables["holding"].update(FOUR)
    if late_s:
        unit.delay = lambda table, address, count: late_s if address == 0 else 0.0
    return unit


def four_point_device(connection: dict[str, Any], unit_id: int = 1, **modbus: Any) -> DeviceConfig:
    settings = {**connection, "unit_id": unit_id, "timeout_s": 0.3, "retries": 1, **modbus}
    return DeviceConfig(
        name=f"meter-{unit_id}",
        product_key="p",
        device_key=f"d{unit_id}",
        interval_s=10.0,
        modbus=settings,
        points=[{"id": f"R{a}", "address": a} for a in FOUR],
    )


def wrong_values(samples: list[Sample]) -> list[dict[str, Any]]:
    return [s.points for s in samples if any(v != FOUR[int(k[1:])] for k, v in s.points.items())]
