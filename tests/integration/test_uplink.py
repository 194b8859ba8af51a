"""Every reply-code path against the hub simulator over a real broker.

Each test asserts what ends in `samples`, in `rejected` and at the hub.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

from gatewayd.config import QueueConfig, Settings
from gatewayd.enos.protocol import METHOD_DISABLE, METHOD_ENABLE
from gatewayd.model import Sample
from gatewayd.queue.store import SampleQueue, read_stats
from gatewayd.runtime.daemon import Daemon
from gatewayd.sim.broker import free_port
from gatewayd.sim.hub import HubSimulator
from gatewayd.sim.modbus import ModbusSimulator, meter_points
from tests.support.brokers import Broker
from tests.support.daemon import gateway_config, modbus_device, running

POST = "thing.measurepoint.post.batch"
RESUME = "thing.measurepoint.resume.batch"
HOUR_AGO_MS = int(time.time() * 1000) - 3_600_000


async def prefill(path: Path, samples: list[Sample]) -> None:
    queue = SampleQueue(QueueConfig(path=path))
    await queue.open()
    for sample in samples:
        queue.put(sample)
    await queue.close()


def old_samples(device: str, n: int, bad: dict[int, dict[str, Any]] | None = None) -> list[Sample]:
    bad = bad or {}
    return [
        Sample("subPK", device, HOUR_AGO_MS + i * 1000, {"P": float(i), **bad.get(i, {})})
        for i in range(n)
    ]


def silent_devices(*names: str) -> list[dict[str, Any]]:
    """Devices that never produce new samples (nothing listens on their port)."""
    port = free_port()
    return [modbus_device(name, port, 1, [{"id": "P", "address": 0}], 1.0) for name in names]


async def until(hub: HubSimulator, predicate: Any, timeout_s: float = 20.0) -> None:
    assert await asyncio.to_thread(hub.wait_for, predicate, timeout_s), "condition never held"


async def drained(daemon: Daemon, hub: HubSimulator, expected: int, timeout_s: float = 30) -> None:
    """Wait until `expected` samples left the queue (delivered or rejected)."""
    forwarder = daemon.forwarder
    async with asyncio.timeout(timeout_s):
        while forwarder.delivered + forwarder.rejected < expected:
            forwarder.progress.clear()
            await forwarder.progress.wait()
    await forwarder.wait_inflight(5)


def rejected_rows(path: Path) -> list[tuple[int, int, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT ts_ms, code, message FROM rejected ORDER BY ts_ms").fetchall()


def config(
    tmp_path: Path, broker: Broker, devices: list[dict[str, Any]], **forward: Any
) -> Settings:
    return gateway_config(tmp_path, broker.port, devices, forward=forward)


async def test_invalid_samples_are_dead_lettered_and_the_rest_delivered(
    tmp_path: Path, broker: Broker, hub: HubSimulator
) -> None:
    bad = {17: {"Bogus": 1}, 250: {"Bogus": 2}, 499: {"Bogus": 3}}
    settings = config(tmp_path, broker, silent_devices("dev1"), batch_max_samples=500)
    await prefill(settings.queue.path, old_samples("dev1", 500, bad))
    hub.set_model("subPK", {"P"})
    async with running(settings, hub) as daemon:
        await drained(daemon, hub, 500)
    stats = read_stats(settings.queue.path)
    assert (stats.pending_samples, stats.rejected, hub.delivered_count()) == (0, 3, 497)
    assert [(ts - HOUR_AGO_MS) // 1000 for ts, _, _ in rejected_rows(settings.queue.path)] == [
        17,
        250,
        499,
    ]
    assert {code for _, code, _ in rejected_rows(settings.queue.path)} == {1204}
    assert "Bogus" in rejected_rows(settings.queue.path)[0][2]
    assert all(d.method == RESUME for d in hub.deliveries)
    # Bisection: each bad sample costs at most two requests per halving.
    assert len(hub.requests) <= 1 + 2 * len(bad) * math.ceil(math.log2(500))


async def test_skip_invalid_flag_lets_the_hub_drop_just_the_points(
    tmp_path: Path, broker: Broker, hub: HubSimulator
) -> None:
    bad = {3: {"Bogus": 1}, 7: {"Bogus": 2}}
    settings = config(tmp_path, broker, silent_devices("dev1"), skip_invalid_measurepoints=True)
    await prefill(settings.queue.path, old_samples("dev1", 50, bad))
    hub.set_model("subPK", {"P"})
    async with running(settings, hub) as daemon:
        await drained(daemon, hub, 50)
    assert read_stats(settings.queue.path).rejected == 0
    assert hub.delivered_count() == 50
    assert all(r.flags == (False, True) for r in hub.requests)
    assert all(set(d.points) == {"P"} for d in hub.deliveries)


async def test_malformed_and_unparseable_samples_are_isolated_too(
    tmp_path: Path, broker: Broker, hub: HubSimulator
) -> None:
    bad = {10: {"Shape": 1}, 90: {"Junk": 1}}
    settings = config(tmp_path, broker, silent_devices("dev1"), batch_max_samples=100)
    await prefill(settings.queue.path, old_samples("dev1", 200, bad))
    hub.set_faults(point_codes={"Shape": 1206, "Junk": 1220})
    async with running(settings, hub) as daemon:
        await drained(daemon, hub, 200)
    rows = rejected_rows(settings.queue.path)
    assert [(code, (ts - HOUR_AGO_MS) // 1000) for ts, code, _ in rows] == [(1206, 10), (1220, 90)]
    assert hub.delivered_count() == 198 and read_stats(settings.queue.path).pending_samples == 0


async def test_a_device_that_cannot_log_in_is_parked_and_others_flow(
    tmp_path: Path, broker: Broker, hub: HubSimulator
) -> None:
    settings = config(tmp_path, broker, silent_devices("good", "bad"), batch_max_samples=40)
    await prefill(settings.queue.path, old_samples("good", 100) + old_samples("bad", 100))
    hub.deny_login.add(("subPK", "bad"))
    async with running(settings, hub) as daemon:
        await until(hub, lambda h: h.delivered_count() >= 100)
        await daemon.forwarder.wait_inflight(5)
        assert ("subPK", "bad") in daemon.topology.parked
        assert {d.device_key for d in hub.deliveries} == {"good"}
        assert read_stats(settings.queue.path).pending_samples == 100  # bad's, kept
        hub.deny_login.clear()  # fixed in the cloud: the periodic re-login succeeds
        await until(hub, lambda h: h.delivered_count() >= 200)
        await daemon.forwarder.wait_inflight(5)
    assert read_stats(settings.queue.path).pending_samples == 0
    assert sorted(d.ts_ms for d in hub.deliveries if d.device_key == "bad") == [
        s.ts_ms for s in old_samples("bad", 100)
    ]


async def test_allow_offline_sends_parked_devices_with_the_flag(
    tmp_path: Path, broker: Broker, hub: HubSimulator
) -> None:
    settings = config(
        tmp_path, broker, silent_devices("good", "bad"), allow_offline_sub_device=True
    )
    await prefill(settings.queue.path, old_samples("good", 30) + old_samples("bad", 30))
    hub.deny_login.add(("subPK", "bad"))
    async with running(settings, hub) as daemon:
        await drained(daemon, hub, 60)
        assert ("subPK", "bad") in daemon.topology.parked
    assert {d.device_key for d in hub.deliveries} == {"good", "bad"}
    assert all(r.flags == (True, False) for r in hub.requests)


async def test_a_kicked_device_is_logged_in_again_after_1212(
    tmp_path: Path, broker: Broker, hub: HubSimulator
) -> None:
    settings = config(tmp_path, broker, silent_devices("dev1"), batch_max_samples=50, inflight=1)
    await prefill(settings.queue.path, old_samples("dev1", 1000))
    hub.set_faults(delay_s=0.02)
    async with running(settings, hub) as daemon:
        await until(hub, lambda h: h.delivered_count() >= 200)
        hub.kick("subPK", "dev1")  # its session ends on the hub side
        await drained(daemon, hub, 1000)
        assert daemon.topology.park_events == 0
    assert any(r.code == 1212 for r in hub.requests)
    assert read_stats(settings.queue.path).pending_samples == 0
    assert len({d.ts_ms for d in hub.deliveries}) == 1000


async def test_hub_commands_disable_and_enable_a_device(
    tmp_path: Path, broker: Broker, hub: HubSimulator
) -> None:
    meters = ModbusSimulator(unit_ids=(1, 2))
    port = await meters.start()
    devices = [modbus_device(f"m{u}", port, u, meter_points(), 0.2) for u in (1, 2)]
    settings = config(tmp_path, broker, devices)
    gateway = ("gwPK", "gw001")
    try:
        async with running(settings, hub) as daemon:
            await until(hub, lambda h: {d.device_key for d in h.deliveries} == {"m1", "m2"})
            hub.send_command(gateway, METHOD_DISABLE, [("subPK", "m2")], "cmd-1")
            await until(hub, lambda h: any(r["id"] == "cmd-1" for r in h.command_replies))
            assert next(r for r in hub.command_replies if r["id"] == "cmd-1")["code"] == 200
            await daemon.forwarder.wait_inflight(5)
            m2_before = sum(d.device_key == "m2" for d in hub.deliveries)
            m1_before = sum(d.device_key == "m1" for d in hub.deliveries)
            await until(
                hub, lambda h: sum(d.device_key == "m1" for d in h.deliveries) >= m1_before + 10
            )
            assert sum(d.device_key == "m2" for d in hub.deliveries) == m2_before  # held back
            with sqlite3.connect(settings.queue.path) as conn:
                held = conn.execute(
                    "SELECT count(*) FROM samples WHERE device_key='m2'"
                ).fetchone()[0]
            assert held >= 5  # ... and kept
            hub.send_command(gateway, METHOD_ENABLE, [("subPK", "m2")], "cmd-2")
            await until(
                hub, lambda h: sum(d.device_key == "m2" for d in h.deliveries) >= m2_before + held
            )
    finally:
        await meters.stop()


async def test_live_samples_go_first_and_the_backlog_drains_in_order(
    tmp_path: Path, broker: Broker, hub: HubSimulator
) -> None:
    meters = ModbusSimulator(unit_ids=(1,))
    port = await meters.start()
    devices = [modbus_device("m1", port, 1, meter_points(), 0.2)]
    settings = config(tmp_path, broker, devices, batch_max_samples=100, inflight=2)
    backlog = [Sample("subPK", "m1", HOUR_AGO_MS + i, {"Seq": i}) for i in range(3000)]
    await prefill(settings.queue.path, backlog)
    hub.set_faults(delay_s=0.05)
    try:
        async with running(settings, hub) as daemon:
            await drained(daemon, hub, 3000)
    finally:
        await meters.stop()
    methods = [r.method for r in hub.requests if r.code == 200]
    last_resume = max(i for i, m in enumerate(methods) if m == RESUME)
    first_post = methods.index(POST)
    assert first_post < last_resume, "live data waited for the whole backlog"
    resumed = [d.ts_ms for d in hub.deliveries if d.method == RESUME]
    assert sorted(resumed) == [s.ts_ms for s in backlog] and resumed == sorted(resumed)
    assert all(d.ts_ms > HOUR_AGO_MS + 60_000 for d in hub.deliveries if d.method == POST)


async def test_a_backlog_that_ages_while_it_drains_goes_in_full_batches(
    tmp_path: Path, broker: Broker, hub: HubSimulator
) -> None:
    """Rows 1 ms apart straddle the live/backfill boundary and cross it, one per millisecond,
    while the drain runs. The backlog must still go in full batches, not a row or two at a time
    as each one ages (which once held a drain to the rate its readings aged)."""
    n, batch = 6000, 500
    now_ms = int(time.time() * 1000)
    start = now_ms - 60_000 - 1000  # the first 1,000 rows are past live_max_age_s = 60
    backlog = [Sample("subPK", "m1", start + i, {"P": i}) for i in range(n)]  # P: the model's
    settings = config(tmp_path, broker, silent_devices("m1"), batch_max_samples=batch)
    await prefill(settings.queue.path, backlog)
    async with running(settings, hub) as daemon:
        await drained(daemon, hub, n)
    data_requests = [r for r in hub.requests if r.method in (POST, RESUME)]
    assert sorted(d.ts_ms for d in hub.deliveries) == [s.ts_ms for s in backlog]
    # Full batches, plus a short one wherever the boundary stood at a step: 13 requests here
    # in a fraction of a second; room for a slow machine whose drain spans many steps. Rows
    # sent as they aged made 660.
    assert len(data_requests) <= n // batch + 20, [r.samples for r in data_requests]


async def test_broker_restart_mid_drain_loses_nothing_and_resends_little(
    tmp_path: Path, broker: Broker, hub: HubSimulator
) -> None:
    batch, inflight = 100, 4
    settings = config(
        tmp_path, broker, silent_devices("dev1"), batch_max_samples=batch, inflight=inflight
    )
    await prefill(settings.queue.path, old_samples("dev1", 3000))
    hub.set_faults(delay_s=0.02)
    async with running(settings, hub) as daemon:
        await until(hub, lambda h: h.delivered_count() >= 500)
        broker.stop()
        broker.start()
        await until(hub, lambda h: len({d.ts_ms for d in h.deliveries}) >= 3000, 40)
        await daemon.forwarder.wait_inflight(5)
    assert read_stats(settings.queue.path).pending_samples == 0
    duplicates = hub.delivered_count() - 3000
    assert 0 <= duplicates <= batch * inflight
