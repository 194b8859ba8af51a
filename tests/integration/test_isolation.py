"""A dead device never delays another: counted at the Modbus server, not trusted from the daemon."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatewayd.queue.store import read_stats
from gatewayd.sim.broker import free_port
from gatewayd.sim.hub import HubSimulator
from gatewayd.sim.modbus import ModbusSimulator, meter_points
from tests.support.brokers import Broker
from tests.support.daemon import gateway_config, modbus_device, running

INTERVAL_S = 0.5
WINDOW_S = 10.0


@pytest.fixture
async def blackhole() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers a byte."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(1024):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


@pytest.mark.timeout(60)
async def test_healthy_devices_keep_their_rhythm_next_to_dead_ones(
    tmp_path: Path,
    broker: Broker,
    hub: HubSimulator,
    blackhole: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd.acquire.poller")
    meters = ModbusSimulator(unit_ids=(1, 2))
    port = await meters.start()
    points = meter_points()
    devices = [
        modbus_device("healthy1", port, 1, points, INTERVAL_S),
        modbus_device("healthy2", port, 2, points, INTERVAL_S),
        modbus_device("silent", blackhole, 1, points, INTERVAL_S),
        modbus_device("refused", free_port(), 1, points, INTERVAL_S),
    ]
    settings = gateway_config(tmp_path, broker.port, devices)
    try:
        async with running(settings, hub) as daemon:
            started = time.monotonic()
            await asyncio.sleep(WINDOW_S)  # the window itself is what is measured
            elapsed = time.monotonic() - started
            reads = {unit: meters.meters[unit].reads for unit in (1, 2)}
            pollers = {p.device.name: p for p in daemon.pollers}
            state = read_stats(settings.queue.path).state  # the live figures the daemon reports
    finally:
        await meters.stop()

    assert state["uplink"] == "connected" and state["drain_rate_per_s"] > 0
    scheduled = int(elapsed / INTERVAL_S) + 1  # the first poll runs at start
    for unit, count in reads.items():
        assert count >= scheduled - 1, f"unit {unit}: {count} reads of {scheduled} scheduled"
    for name in ("silent", "refused"):
        dead = pollers[name]
        # The circuit breaker: attempts back off (0.5, 1, 2, 4 s …) instead of every tick.
        assert 3 <= dead.polls <= 6 < scheduled, (dead.polls, scheduled)
        assert dead.skipped > 0
        downs = [r for r in caplog.records if "device_down" in r.message and name in r.message]
        assert len(downs) == 1, "a failing device is logged once, not per poll"
