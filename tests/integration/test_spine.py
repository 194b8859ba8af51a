"""The whole path over real sockets: pymodbus server → daemon → SQLite → mosquitto → hub simulator."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from gatewayd.queue.store import read_stats
from gatewayd.sim.hub import HubSimulator
from tests.support.brokers import Broker
from tests.support.daemon import (
    config_data,
    gateway_config,
    modbus_device,
    register_file,
    running,
    start_gatewayd,
    stop_gatewayd,
    write_config,
)
from tests.support.modbus import KNOWN_POINTS, KNOWN_VALUES, KnownModbusServer


async def wait_hub(hub: HubSimulator, predicate, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    assert await asyncio.to_thread(hub.wait_for, predicate, timeout_s), "hub never saw it"


def pending_rows(db: Path) -> list[tuple[int, str, int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT id, device_key, ts_ms, points FROM samples ORDER BY id"
        ).fetchall()


def two_devices(port: int) -> list[dict]:  # type: ignore[type-arg]
    return [modbus_device(f"dev{u}", port, u, KNOWN_POINTS) for u in (1, 2)]


async def test_polls_reach_the_hub_decoded_and_the_queue_ends_empty(
    tmp_path: Path, broker: Broker, hub: HubSimulator, known_modbus: KnownModbusServer
) -> None:
    settings = gateway_config(tmp_path, broker.port, two_devices(known_modbus.port))
    before_ms = int(time.time() * 1000)
    async with running(settings, hub) as daemon:
        await wait_hub(
            hub,
            lambda h: (
                {d.device_key for d in h.deliveries} == {"dev1", "dev2"} and len(h.deliveries) >= 10
            ),
        )
        await daemon.queue.flush()
    after_ms = int(time.time() * 1000)

    # Fresh readings are live data: real-time post batches under the gateway's keys.
    assert hub.requests[0].method == "thing.measurepoint.post.batch"
    assert hub.requests[0].topic == "/sys/gwPK/gw001/thing/measurepoint/post/batch"
    for delivery in hub.deliveries:
        assert delivery.product_key == "subPK"
        assert delivery.points == pytest.approx(KNOWN_VALUES)
        assert before_ms <= delivery.ts_ms <= after_ms
    for device in ("dev1", "dev2"):
        stamps = [d.ts_ms for d in hub.deliveries if d.device_key == device]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    # Whatever the hub has not confirmed is still queued; nothing else is.
    stats = read_stats(settings.queue.path)
    assert stats.state["queued"] == len(hub.deliveries) + stats.pending_samples


async def test_outage_backlog_arrives_exactly_as_queued(
    tmp_path: Path, broker: Broker, hub: HubSimulator, known_modbus: KnownModbusServer
) -> None:
    settings = gateway_config(tmp_path, broker.port, two_devices(known_modbus.port))
    db = settings.queue.path
    async with running(settings, hub) as daemon:
        await wait_hub(hub, lambda h: len(h.deliveries) >= 4)
        broker.stop()
        await asyncio.wait_for(daemon.session.disconnected.wait(), 10)
        while len(pending_rows(db)) < 20:  # polls go on while the uplink is down
            await asyncio.wait_for(daemon.queue.new_data.wait(), 5)
            daemon.queue.new_data.clear()
        backlog = pending_rows(db)
        broker.start()
        delivered_before = hub.delivered_count()
        await wait_hub(
            hub,
            lambda h: (
                {(d.device_key, d.ts_ms) for d in h.deliveries}
                >= {(row[1], row[2]) for row in backlog}
            ),
        )
        assert hub.delivered_count() > delivered_before
    # Every backlog row arrived with the exact points and time it was queued with.
    arrived = {(d.device_key, d.ts_ms): d.points for d in hub.deliveries}
    for _id, device_key, ts_ms, points in backlog:
        assert arrived[(device_key, ts_ms)] == json.loads(points)
    # And none of them is still queued.
    left = {row[0] for row in pending_rows(db)}
    assert not left & {row[0] for row in backlog}


@pytest.mark.parametrize(
    "fault",
    [
        {"reply_code": 500},
        {"reply_code": 1212},
        {"drop": True},
        {"garbage": True},
        {"delay_s": 1.5},
    ],
)
async def test_anything_but_200_deletes_nothing(
    tmp_path: Path,
    broker: Broker,
    hub: HubSimulator,
    known_modbus: KnownModbusServer,
    fault: dict[str, object],
) -> None:
    hub.set_faults(**fault)
    devices = [modbus_device("dev1", known_modbus.port, 1, KNOWN_POINTS, interval_s=0.5)]
    settings = gateway_config(tmp_path, broker.port, devices, forward={"reply_timeout_s": 0.5})
    async with running(settings, hub) as daemon:
        await wait_hub(hub, lambda h: len(h.requests) >= 3)
        await daemon.queue.flush()
        rows = pending_rows(settings.queue.path)
        stats = read_stats(settings.queue.path)
        # Everything ever queued is still there: nothing was deleted without a true 200 in time.
        assert len(rows) == stats.state["queued"] > 0
        assert stats.state["sent"] == 0 and stats.state["rejected"] == 0
        if fault == {"reply_code": 1212}:
            await asyncio.wait_for(
                daemon.topology.parked_signal.wait(), 10
            )  # held back, not dropped
        else:
            # Each request that got no true 200 in time is sent again, its rows counted as
            # retried. How many by the hub's third request depends on how rows are grouped
            # (live rows wait for the live request ahead, forward/batches.py): wait, bounded.
            async with asyncio.timeout(10):
                retried = read_stats(settings.queue.path).state["retried"]
                while retried < 2:  # a count in a file: nothing to await
                    await asyncio.sleep(0.05)
                    retried = read_stats(settings.queue.path).state["retried"]
        if "delay_s" not in fault:
            assert hub.delivered_count() == 0
        # (A late 200 means the hub stored data we never saw confirmed: we keep and re-send it.)
        # Once the hub answers 200 in time again, the same rows go through.
        before = hub.delivered_count()
        hub.set_faults(reply_code=200, drop=False, garbage=False, delay_s=0.0)
        first_ids = {row[0] for row in rows}
        await wait_hub(
            hub,
            lambda h: (
                {(d.device_key, d.ts_ms) for d in h.deliveries[before:]}
                >= {(r[1], r[2]) for r in rows}
            ),
        )
        await daemon.forwarder.wait_inflight(timeout_s=5)  # the acks of what the hub confirmed
        assert not first_ids & {r[0] for r in pending_rows(settings.queue.path)}
    if "reply_code" in fault:
        assert read_stats(settings.queue.path).state["last_reply_code"] == 200


async def test_gatewayd_run_as_a_process_delivers_and_stops_on_sigterm(
    tmp_path: Path, broker: Broker, hub: HubSimulator, known_modbus: KnownModbusServer
) -> None:

    devices = [modbus_device("dev1", known_modbus.port, 1, KNOWN_POINTS, 0.2)]
    data = config_data(
        tmp_path,
        broker.port,
        devices,
        queue={"path": str(tmp_path / "q.db")},
        gateway={"device_secret": "Zq-7-secret"},
    )
    config = write_config(tmp_path / "config.toml", data)
    register_file(hub, config)
    proc = await start_gatewayd("run", "-c", str(config))
    try:
        await wait_hub(hub, lambda h: len(h.deliveries) >= 5)
    finally:
        log = await stop_gatewayd(proc, 15)
    assert proc.returncode == 0, log
    assert "level=info logger=gatewayd.runtime.daemon started devices=1" in log
    assert "stopping" in log and "Traceback" not in log and "level=error" not in log
    assert "Zq-7-secret" not in log
    stats = read_stats(tmp_path / "q.db")
    # Everything read was committed; what the hub confirmed was deleted, the rest is queued.
    assert stats.state["queued"] == stats.state["sent"] + stats.pending_samples
    assert stats.state["sent"] >= 5
