"""kill -9 of a running `gatewayd run`, again and again: nothing committed may vanish.

The meter's `Seq` register counts its reads, so every sample is unique and a gap at the hub is
a lost reading. After each kill the test reads the queue file: every row seen there was
committed, and must end at the hub or still be queued. Readings lost to a kill may only be
those of the open commit group (plus a poll in progress).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatewayd.queue.store import read_stats
from gatewayd.sim.hub import HubSimulator
from gatewayd.sim.modbus import ModbusSimulator, meter_points
from tests.support.brokers import Broker
from tests.support.child import Child
from tests.support.daemon import config_data, modbus_device, register_file, write_config

INTERVAL_S = 0.05
COMMIT_MS = 50
BATCH = 20
INFLIGHT = 2


def kill_config(tmp_path: Path, broker_port: int, modbus_port: int) -> Path:
    device = modbus_device("m1", modbus_port, 1, meter_points(), INTERVAL_S)
    data = config_data(
        tmp_path,
        broker_port,
        [device],
        gateway={"device_secret": "g"},
        mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 0.5},
        queue={"path": str(tmp_path / "q.db"), "commit_interval_ms": COMMIT_MS},
        forward={
            "batch_max_samples": BATCH,
            "inflight": INFLIGHT,
            "reply_timeout_s": 2,
            "retry_min_s": 0.1,
            "retry_max_s": 0.3,
        },
    )
    return write_config(tmp_path / "config.toml", data)


@pytest.fixture
async def meter() -> AsyncIterator[ModbusSimulator]:
    simulator = ModbusSimulator(unit_ids=(1,))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def queued_rows(db: Path) -> set[tuple[str, int]]:
    if not db.exists():
        return set()
    with sqlite3.connect(db) as conn:
        return {(dk, ts) for dk, ts in conn.execute("SELECT device_key, ts_ms FROM samples")}


async def run_kills(
    tmp_path: Path, broker: Broker, hub: HubSimulator, meter: ModbusSimulator, kills: int, seed: int
) -> None:
    rng = random.Random(seed)
    config = kill_config(tmp_path, broker.port, meter.port)
    register_file(hub, config)
    db = tmp_path / "q.db"
    child = Child(config, tmp_path / "notify.sock")
    committed: set[tuple[str, int]] = set()
    try:
        for _ in range(kills):
            await child.start()
            await asyncio.sleep(rng.uniform(0.1, 0.8))  # the fault schedule itself
            await child.kill()
            committed |= queued_rows(db)
        await child.start()  # the last run drains what is left
        assert await asyncio.to_thread(
            hub.wait_for,
            lambda h: (
                committed <= {(d.device_key, d.ts_ms) for d in h.deliveries} | queued_rows(db)
            ),
            30,
        )
    finally:
        await child.stop()

    at_hub = {(d.device_key, d.ts_ms) for d in hub.deliveries}
    still = queued_rows(db)
    missing = committed - at_hub - still
    assert not missing, f"{len(missing)} committed samples vanished"
    # Readings lost to the kills: reads the meter answered that are neither at the hub nor queued.
    seqs_at_hub = {d.points["Seq"] for d in hub.deliveries}
    with sqlite3.connect(db) as conn:
        seqs_queued = {json.loads(p)["Seq"] for (p,) in conn.execute("SELECT points FROM samples")}
    reads = meter.meters[1].reads
    lost = reads - len(seqs_at_hub | seqs_queued)
    per_kill = COMMIT_MS / 1000 / INTERVAL_S + 2  # the open group, and a poll in progress
    assert 0 <= lost <= kills * per_kill, f"{lost} readings lost in {kills} kills"
    duplicates = len(hub.deliveries) - len(at_hub)
    assert duplicates <= kills * BATCH * INFLIGHT
    assert read_stats(db).state["queued"] >= len(committed)


async def test_kill_9_twenty_times_loses_nothing_committed(
    tmp_path: Path, broker: Broker, hub: HubSimulator, meter: ModbusSimulator
) -> None:
    await run_kills(tmp_path, broker, hub, meter, kills=20, seed=20261125)


@pytest.mark.slow
async def test_kill_9_a_hundred_times(
    tmp_path: Path, broker: Broker, hub: HubSimulator, meter: ModbusSimulator
) -> None:
    await run_kills(tmp_path, broker, hub, meter, kills=100, seed=7)
