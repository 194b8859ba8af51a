"""Report by exception must not keep back a value the hub never got.

A point with a deadband is left out while it stays within its band of the value last sent. If
that value is then lost on its way (dead-lettered by the hub, evicted by the queue's bounds),
the hub's last value is older, and leaving out readings within the band of the lost one would
show it as current for ever (no `heartbeat_s` here). After a loss the next reading of every
point must go out. Real broker, the strict hub simulator, a pymodbus server, real SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from gatewayd.acquire.poller import build_pollers
from gatewayd.config import DeviceConfig, QueueConfig
from gatewayd.errors import QueueError
from gatewayd.model import Sample
from gatewayd.queue import admin
from gatewayd.queue.writer import SampleQueue
from gatewayd.sim.hub import HubSimulator
from tests.support.brokers import Broker
from tests.support.daemon import gateway_config, modbus_device, running
from tests.support.modbus import KnownModbusServer

#: Known registers (tests/support/modbus.py), steady: P = 12.5 and T = -1.5 are sent once and
#: then left out; U has no band and goes in every sample, so no sample is empty.
POINTS: list[dict[str, Any]] = [
    {"id": "P", "table": "holding", "address": 0, "type": "float32", "deadband": 1.0},
    {
        "id": "T",
        "table": "holding",
        "address": 3,
        "type": "int16",
        "scale": 0.5,
        "offset": 1.0,
        "deadband": 0,
    },
    {"id": "U", "table": "holding", "address": 2, "type": "uint16", "scale": 0.1},
]


def banded_meter(port: int) -> dict[str, Any]:
    return modbus_device("m1", port, 1, POINTS, interval_s=0.2)


def got_p(hub: HubSimulator) -> bool:
    return any(d.device_key == "m1" and "P" in d.points for d in hub.deliveries)


async def until(hub: HubSimulator, predicate: Any, timeout_s: float) -> bool:
    return await asyncio.to_thread(hub.wait_for, predicate, timeout_s)


async def test_a_dead_lettered_value_is_sent_again_with_the_next_reading(
    tmp_path: Path,
    broker: Broker,
    hub: HubSimulator,
    known_modbus: KnownModbusServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hub refuses the first sample for its T (a model not yet fixed) and it is
    dead-lettered, taking P's value with it; once the model is fixed, P must reach the hub
    although the meter still reads 12.5. A neighbour's steady P, delivered, is not sent again."""
    caplog.set_level(logging.INFO, logger="gatewayd.losses")
    neighbour = modbus_device("m2", known_modbus.port, 2, [POINTS[0], POINTS[2]], 0.2)
    settings = gateway_config(tmp_path, broker.port, [banded_meter(known_modbus.port), neighbour])
    hub.set_faults(point_codes={"T": 1204})
    async with running(settings, hub) as daemon:
        async with asyncio.timeout(20):
            while daemon.forwarder.rejected == 0:  # the first sample, {P, T, U}
                daemon.forwarder.progress.clear()
                await daemon.forwarder.progress.wait()
        assert not got_p(hub)
        hub.set_faults(point_codes={})  # fixed in the cloud
        assert await until(hub, got_p, 10), "P (12.5) never reached the hub after its loss"
        m1, m2 = (p.report_by_exception.resets for p in daemon.pollers)
        assert m1 >= 1 and m2 == 0
    assert {d.points.get("P") for d in hub.deliveries if "P" in d.points} == {12.5}
    assert [d.device_key for d in hub.deliveries if "P" in d.points].count("m2") == 1
    assert "deadband_reset reason=rejected samples=1 " in caplog.text


async def test_a_value_evicted_by_the_bounds_is_sent_again_with_the_next_reading(
    tmp_path: Path,
    broker: Broker,
    hub: HubSimulator,
    known_modbus: KnownModbusServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The uplink is down (the hub does not answer); a burst fills the 1 MiB queue and the
    oldest rows, the first sample with P among them, are evicted. When the hub answers again,
    P must reach it."""
    settings = gateway_config(
        tmp_path,
        broker.port,
        [banded_meter(known_modbus.port)],
        queue={"max_bytes": 1 << 20, "synchronous": "normal"},
    )
    caplog.set_level(logging.INFO, logger="gatewayd.losses")
    hub.set_faults(drop=True)
    async with running(settings, hub) as daemon:
        queue = daemon.queue
        async with asyncio.timeout(10):
            while daemon.pollers[0].report_by_exception.suppressed < 2:  # P and T sent once
                queue.new_data.clear()
                await queue.new_data.wait()
        first = 1_795_000_000_000
        for n in range(20_000):  # another source's burst, over the whole bound
            queue.put(Sample("subPK", "m1", first + n, {"U": float(n)}))
        await queue.flush()
        async with asyncio.timeout(10):
            while queue.evicted == 0:  # the next commit evicts the oldest rows
                queue.new_data.clear()
                await queue.new_data.wait()
        hub.set_faults(drop=False)
        assert await until(hub, got_p, 30), "P (12.5) never reached the hub after its eviction"
    assert "deadband_reset reason=evicted samples=" in caplog.text


def reading(n: int, boot: str | None = None) -> Sample:
    return Sample("subPK", "m1", 1_795_000_000_000 + n, {"P": 12.5}, boot, n if boot else None)


async def test_every_way_the_queue_loses_readings_is_told_to_report_by_exception(
    tmp_path: Path,
) -> None:
    """Dead letters (the hub's, and held readings of an earlier boot under `reject`), an
    eviction by the bounds, and an operator's `gatewayd queue purge` beside the daemon."""
    path = tmp_path / "queue.db"
    queue = SampleQueue(QueueConfig(path=path, max_bytes=1 << 20, synchronous="normal"))
    await queue.open()
    try:
        for n in range(10):
            queue.put(reading(n, "earlier-boot" if n < 3 else None))
        await queue.flush()
        await queue.figures()  # the purge counter's starting point
        assert queue.losses.serial == 0
        rows = await queue.fetch_after(0, 100)  # 3..9: held readings are not sent
        await queue.reject([rows[0].id], 1204, "refused")
        assert await queue.release_other_boots("this-boot", "reject") == 3
        assert await queue.release_other_boots("this-boot", "send") == 0
        await asyncio.to_thread(admin.purge, path, "m1", 1_795_000_000_000 + 6)  # 4 and 5
        await queue.figures()
        for n in range(100, 20_100):  # over the whole bound: the next group evicts
            queue.put(reading(n))
        await queue.flush()
        queue.put(reading(20_100))
        await queue.flush()
        assert queue.evicted > 0
    finally:
        await queue.close()
    assert queue.losses.samples == {"rejected": 4, "purged": 2, "evicted": queue.evicted}
    assert queue.losses.serial >= 4  # one per event: each eviction is one


async def test_a_reading_the_sink_refused_is_not_counted_as_sent(
    known_modbus: KnownModbusServer,
) -> None:
    """The queue refused the first sample (it raised): P was never handed on, so the next
    poll must carry it although the meter still reads 12.5."""
    config = DeviceConfig.model_validate(banded_meter(known_modbus.port))
    refused: list[Sample] = []
    taken: list[Sample] = []

    def sink(sample: Sample) -> None:
        if not refused:  # the first one
            refused.append(sample)
            raise QueueError("queue is not open")
        taken.append(sample)

    pollers, endpoints = build_pollers([config], sink)
    try:
        with pytest.raises(QueueError):
            await pollers[0].poll()
        await pollers[0].poll()
        await pollers[0].poll()
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    assert [sorted(s.points) for s in refused + taken] == [["P", "T", "U"]] * 2 + [["U"]]
