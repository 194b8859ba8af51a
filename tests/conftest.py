from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gatewayd.sim.hub import HubSimulator
from tests.support.brokers import FrontedBroker, make_broker
from tests.support.modbus import KnownModbusServer
from tests.support.raw_gateway import GATEWAY


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    """A command run in-process (CliRunner) installs gatewayd's handler on the root logger, with
    its repeat limiter: left there, it held back later tests' lines and added its `log_limited`
    lines to their caplog (CI saw a test's 'polls_discarded' lines include one)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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
