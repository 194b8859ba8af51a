"""A gateway that boots in 1970 and gets the right time later: readings end with correct times."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gatewayd.acquire.clock import ClockGuard
from gatewayd.runtime.daemon import Daemon
from gatewayd.sim.hub import HubSimulator
from tests.support.brokers import Broker
from tests.support.daemon import gateway_config, modbus_device, register
from tests.support.modbus import KNOWN_POINTS, KnownModbusServer

FIFTY_SIX_YEARS_MS = 56 * 365 * 86_400_000


async def test_readings_from_before_the_clock_was_set_get_their_real_time(
    tmp_path: Path, broker: Broker, hub: HubSimulator, known_modbus: KnownModbusServer
) -> None:
    skew = {"ms": -FIFTY_SIX_YEARS_MS}  # the wall clock starts in 1970

    def wall_ms() -> int:
        return time.time_ns() // 1_000_000 + skew["ms"]

    settings = gateway_config(
        tmp_path, broker.port, [modbus_device("dev1", known_modbus.port, 1, KNOWN_POINTS, 0.1)]
    )
    register(hub, settings)
    guard = ClockGuard(settings.clock, wall_ms=wall_ms, synchronised=lambda: False)
    daemon = Daemon(settings, shutdown_timeout_s=2, clock=guard)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        started_real = time.time_ns() // 1_000_000
        await daemon.started.wait()
        while daemon.pollers[0].polls < 15:  # readings taken in "1970", held in the queue
            await asyncio.wait_for(daemon.queue.new_data.wait(), 5)
            daemon.queue.new_data.clear()
        assert hub.delivered_count() == 0  # none sent with a 1970 time
        skew["ms"] = 0  # NTP sets the clock
        assert await asyncio.to_thread(hub.wait_for, lambda h: h.delivered_count() >= 15, 20)
        ended_real = time.time_ns() // 1_000_000
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    stamps = sorted(d.ts_ms for d in hub.deliveries)
    assert started_real - 1000 <= stamps[0] and stamps[-1] <= ended_real + 1000  # real times
    assert len(set(stamps)) == len(stamps)
