"""What `queue stats` says of the daemon from the queue's `state` table, against a real daemon.

The live figures are written every health tick; they must not outlive the daemon (a stopped one
said `uplink connected` for ever), and a change of the uplink is dated by when it happened, not
by the tick that wrote it down up to 2 s later.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gatewayd.clocks import now_ms
from gatewayd.queue.store import read_stats
from gatewayd.runtime.daemon import Daemon
from gatewayd.runtime.supervisor import StageFailed
from gatewayd.sim.hub import HubSimulator
from tests.support.brokers import FrontedBroker
from tests.support.daemon import gateway_config, modbus_device, register, running
from tests.support.modbus import KNOWN_POINTS, KnownModbusServer


def logged_ms(caplog: pytest.LogCaptureFixture, event: str) -> int:
    (record,) = [r for r in caplog.records if r.getMessage().startswith(event)]
    return round(record.created * 1000)


async def test_the_uplink_is_dated_by_its_event_and_a_stop_is_written_down(
    tmp_path: Path,
    broker: FrontedBroker,
    hub: HubSimulator,
    known_modbus: KnownModbusServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Seen failing: `uplink since` was the time of the health tick that noticed the change
    (uplink_connected logged at 06:55:17.132, since 06:55:19.133), and after a graceful stop
    the state still said `uplink connected`."""
    caplog.set_level(logging.INFO)
    devices = [modbus_device("dev1", known_modbus.port, 1, KNOWN_POINTS, 0.2)]
    settings = gateway_config(tmp_path, broker.port, devices)
    async with running(settings, hub) as daemon:
        await asyncio.wait_for(daemon.session.connected.wait(), 20)
        await asyncio.sleep(0.5)  # the change is written down later, by a tick: as it happens
        await daemon.health.tick()
        state = read_stats(settings.queue.path).state
        assert state["uplink"] == "connected"
        connected_ms = logged_ms(caplog, "uplink_connected")
        assert abs(state["uplink_since_ms"] - connected_ms) <= 20, (
            state["uplink_since_ms"] - connected_ms
        )
        assert state["daemon"] == "running"
        stop_asked = now_ms()
    stopped = now_ms()
    state = read_stats(settings.queue.path).state
    assert (state["uplink"], state.get("daemon")) == ("stopped", "stopped")
    assert stop_asked <= state["daemon_since_ms"] == state["uplink_since_ms"] <= stopped
    assert (state["drain_rate_per_s"], state["inflight_requests"]) == (0, 0)


async def test_a_daemon_stopped_by_a_stalled_stage_says_so(
    tmp_path: Path,
    broker: FrontedBroker,
    hub: HubSimulator,
    known_modbus: KnownModbusServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen failing: after a `stage_stalled` exit the state still said `uplink connected`."""
    monkeypatch.setenv("WATCHDOG_USEC", "8000000")  # stalled after 5 s of silence
    monkeypatch.setenv("GATEWAYD_TEST_FAULT", "forwarder:hang")
    devices = [modbus_device("dev1", known_modbus.port, 1, KNOWN_POINTS, 0.2)]
    settings = gateway_config(tmp_path, broker.port, devices)
    register(hub, settings)
    daemon = Daemon(settings, shutdown_timeout_s=2.0)
    with pytest.raises(StageFailed, match="forwarder"):
        async with asyncio.timeout(40):
            await daemon.run(asyncio.Event())
    state = read_stats(settings.queue.path).state
    assert state["uplink"] == "stopped"
    assert state["daemon"].startswith("stopped: stage forwarder failed: StageStalled")
    assert state["daemon_since_ms"] == state["uplink_since_ms"] == state["updated_ms"]
