from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gatewayd.sim.hub import HubSimulator
from tests.support.brokers import FrontedBroker, make_broker
from tests.support.modbus import KnownModbusServer
from tests.support.raw_gateway import GATEWAY


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[FrontedBroker]:
    instance = make_broker(tmp_path)
    instance.start()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def hub(broker: FrontedBroker) -> Iterator[HubSimulator]:
    """The strict hub: it knows the tests' default gateway (tests/support/daemon.py) and checks
    its CONNECT at the broker's front; `register(hub, settings)` adds a config's gateway,
    sub-devices and model."""
    simulator = HubSimulator("127.0.0.1", broker.backend_port)
    simulator.register_gateway(*GATEWAY)
    broker.judge = simulator.check_login
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
