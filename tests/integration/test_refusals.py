"""The daemon against a hub that refuses it (issue 16): the gateway's own login, and sub-devices'.

The hub simulator's front refuses a wrong gateway secret with CONNACK 5, as the real hub does;
the daemon must say so once, clearly, back off (never a tight loop), show the state in metrics
and `queue stats`, and keep queueing readings. Sub-device login refusals name the device and
the likely cause.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path

import pytest

from gatewayd.model import Sample
from gatewayd.queue.store import read_stats
from gatewayd.sim.broker import free_port
from gatewayd.sim.hub import HubSimulator
from tests.integration.test_metrics import scrape
from tests.integration.test_uplink import HOUR_AGO_MS, prefill, rejected_rows
from tests.support.brokers import FrontedBroker
from tests.support.daemon import gateway_config, modbus_device, register, running
from tests.support.modbus import KNOWN_POINTS, KnownModbusServer


async def test_a_wrong_gateway_secret_is_refused_and_handled(
    tmp_path: Path,
    broker: FrontedBroker,
    hub: HubSimulator,
    known_modbus: KnownModbusServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics_port = free_port()
    devices = [modbus_device("dev1", known_modbus.port, 1, KNOWN_POINTS, 0.1)]
    settings = gateway_config(
        tmp_path,
        broker.port,
        devices,
        gateway={"device_secret": "an-old-secret"},  # the hub knows gw-secret
        mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 0.8},
        metrics={"listen": f"127.0.0.1:{metrics_port}"},
    )
    caplog.set_level(logging.INFO)
    async with running(settings) as daemon:  # not registered: the hub keeps its own secret
        refused = await asyncio.to_thread(
            hub.wait_for, lambda h: sum(1 for x in h.logins if x.code == 5) >= 6, 30
        )
        assert refused, "the hub never refused the gateway six times"
        assert not daemon.session.connected.is_set()
        await daemon.health.tick()
        assert daemon.health.snapshot.queue.pending > 0  # readings keep being queued
        metrics = await asyncio.to_thread(scrape, metrics_port)
        uplink = read_stats(settings.queue.path).state["uplink"]
    attempts = [x.at for x in hub.logins]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.2 * 0.9 for gap in gaps), gaps  # never a tight loop
    assert max(gaps) <= 0.8 + 1.0, gaps  # capped at reconnect_max_s (+ a connect under load)
    lines = [r.getMessage() for r in caplog.records if "uplink_refused" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "reason=not_authorised" in lines[0] and "hint='check gateway.device_secret'" in lines[0]
    assert not [r for r in caplog.records if "uplink_connect_failed" in r.getMessage()]
    assert metrics[("gatewayd_uplink_refusals_total", ())] >= 6
    assert metrics[("gatewayd_uplink_refused", ())] == 1
    assert uplink.startswith("refused: not_authorised")


async def test_the_right_secret_after_refusals_connects_and_clears_the_state(
    tmp_path: Path, broker: FrontedBroker, hub: HubSimulator, known_modbus: KnownModbusServer
) -> None:
    devices = [modbus_device("dev1", known_modbus.port, 1, KNOWN_POINTS, 0.1)]
    settings = gateway_config(
        tmp_path,
        broker.port,
        devices,
        gateway={"device_secret": "rotated"},
        mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 0.4},
    )
    async with running(settings) as daemon:
        assert await asyncio.to_thread(hub.wait_for, lambda h: len(h.logins) >= 2, 20)
        register(hub, settings)  # the operator rotates the secret on the hub too
        await asyncio.wait_for(daemon.session.connected.wait(), 20)
        assert await asyncio.to_thread(hub.wait_for, lambda h: h.delivered_count() > 0, 20)
        assert daemon.session.refused == ""
        await daemon.health.tick()
        assert read_stats(settings.queue.path).state["uplink"] == "connected"
    assert read_stats(settings.queue.path).state["uplink"] == "stopped"


@pytest.mark.parametrize(
    ("setup", "code", "cause"),
    [
        ("unknown", "705", "unknown to the hub"),
        ("wrong_secret", "742", "device_secret"),
        ("not_in_topology", "740", "topology"),
    ],
)
async def test_a_refused_sub_device_login_names_the_device_and_cause(
    tmp_path: Path,
    broker: FrontedBroker,
    hub: HubSimulator,
    known_modbus: KnownModbusServer,
    caplog: pytest.LogCaptureFixture,
    setup: str,
    code: str,
    cause: str,
) -> None:
    devices = [
        modbus_device("good", known_modbus.port, 1, KNOWN_POINTS, 0.2),
        modbus_device("bad", known_modbus.port, 2, KNOWN_POINTS, 0.2),
    ]
    settings = gateway_config(tmp_path, broker.port, devices)
    caplog.set_level(logging.INFO)
    register(hub, settings)
    if setup == "unknown":
        del hub.registry[("subPK", "bad")]
    elif setup == "wrong_secret":
        hub.deny_login.add(("subPK", "bad"))
    else:  # the hub holds another secret: topo.add is refused, so the device is not attached
        hub.registry[("subPK", "bad")] = "another-secret"
    async with running(settings) as daemon:
        await asyncio.wait_for(daemon.topology.parked_signal.wait(), 20)
        assert await asyncio.to_thread(
            hub.wait_for, lambda h: any(d.device_key == "good" for d in h.deliveries), 20
        )
    lines = [r.getMessage() for r in caplog.records if "sub_device_parked" in r.getMessage()]
    assert lines and "device=subPK/bad" in lines[0]
    assert code in lines[0] and cause in lines[0], lines[0]


async def test_points_the_model_refuses_are_dead_lettered_naming_the_point(
    tmp_path: Path, broker: FrontedBroker, hub: HubSimulator
) -> None:
    """The hub's model (derived from the config: P is an unscaled uint16, so an int) refuses a
    string and an unreadable quality point sent as null; only those samples are set aside."""
    points = [{"id": "P", "address": 0}, {"id": "Q", "address": 1, "quality": True}]
    devices = [modbus_device("dev1", free_port(), 1, points, 1.0)]  # nothing listens: no polls
    settings = gateway_config(tmp_path, broker.port, devices, forward={"batch_max_samples": 50})
    bad = {7: {"P": "high"}, 30: {"P": 1, "Q": {"value": None, "quality": 3}}}
    samples = [
        Sample("subPK", "dev1", HOUR_AGO_MS + i * 1000, bad.get(i, {"P": i})) for i in range(60)
    ]
    await prefill(settings.queue.path, samples)
    async with running(settings, hub) as daemon:
        async with asyncio.timeout(30):
            while daemon.forwarder.delivered + daemon.forwarder.rejected < 60:
                daemon.forwarder.progress.clear()
                await daemon.forwarder.progress.wait()
    rows = rejected_rows(settings.queue.path)
    assert [(code, (ts - HOUR_AGO_MS) // 1000) for ts, code, _ in rows] == [(1204, 7), (1204, 30)]
    assert "'P'" in rows[0][2] and "'Q'" in rows[1][2] and "null" in rows[1][2]
    assert hub.delivered_count() == 58


async def test_skip_invalid_measurepoints_delivers_the_good_points(
    tmp_path: Path, broker: FrontedBroker, hub: HubSimulator
) -> None:
    points = [{"id": "P", "address": 0}, {"id": "Q", "address": 1, "quality": True}]
    devices = [modbus_device("dev1", free_port(), 1, points, 1.0)]
    settings = gateway_config(
        tmp_path, broker.port, devices, forward={"skip_invalid_measurepoints": True}
    )
    unreadable = {"P": 4, "Q": {"value": None, "quality": 3}}
    await prefill(settings.queue.path, [Sample("subPK", "dev1", HOUR_AGO_MS, unreadable)])
    async with running(settings, hub):
        assert await asyncio.to_thread(hub.wait_for, lambda h: h.delivered_count() == 1, 20)
    assert [d.points for d in hub.deliveries] == [{"P": 4}]
    assert rejected_rows(settings.queue.path) == []


async def test_an_unreachable_hub_after_refusals_is_not_called_a_refusal(
    tmp_path: Path, broker: FrontedBroker, hub: HubSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    settings = gateway_config(
        tmp_path,
        broker.port,
        [modbus_device("dev1", free_port(), 1, KNOWN_POINTS, 1.0)],
        gateway={"device_secret": "an-old-secret"},
        mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 0.4},
    )
    caplog.set_level(logging.INFO)
    async with running(settings) as daemon:
        assert await asyncio.to_thread(hub.wait_for, lambda h: len(h.logins) >= 2, 20)
        assert daemon.session.refused == "not_authorised"
        broker.stop()  # now nothing listens: unreachable, not refused
        try:
            async with asyncio.timeout(20):
                while daemon.session.connect_failures == 0:
                    daemon.session.connect_failed.clear()
                    await daemon.session.connect_failed.wait()
            assert daemon.session.refused == ""
        finally:
            broker.start()
    assert any("uplink_connect_failed" in r.getMessage() for r in caplog.records)
