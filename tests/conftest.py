from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gatewayd.sim.hub import HubSimulator
from tests.support.brokers import Broker, make_broker
from tests.support.modbus import KnownModbusServer


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    instance = make_broker(tmp_path)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def hub(broker: Broker) -> Iterator[HubSimulator]:
    simulator = HubSimulator("127.0.0.1", broker.port)
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
async def known_modbus() -> AsyncIterator[KnownModbusServer]:
    server = KnownModbusServer(unit_ids=(1, 2))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
