"""The metrics endpoint scraped during an outage and after the drain."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gatewayd.sim.broker import free_port
from gatewayd.sim.hub import HubSimulator
from tests.support.brokers import Broker
from tests.support.daemon import gateway_config, modbus_device, running
from tests.support.modbus import KNOWN_POINTS, KnownModbusServer


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def test_metrics_during_an_outage_and_after_the_drain(
    tmp_path: Path, broker: Broker, hub: HubSimulator, known_modbus: KnownModbusServer
) -> None:
    port = free_port()
    devices = [modbus_device("dev1", known_modbus.port, 1, KNOWN_POINTS, 0.1)]
    settings = gateway_config(
        tmp_path, broker.port, devices, metrics={"listen": f"127.0.0.1:{port}"}
    )
    async with running(settings, hub) as daemon:
        await asyncio.to_thread(hub.wait_for, lambda h: h.delivered_count() >= 3, 20)
        broker.stop()
        await asyncio.wait_for(daemon.session.disconnected.wait(), 10)
        await daemon.health.tick()
        # Readings pile up while the uplink is down.
        while daemon.health.snapshot.queue.pending < 10:
            await asyncio.wait_for(daemon.queue.new_data.wait(), 5)
            daemon.queue.new_data.clear()
            await daemon.health.tick()
        during = await asyncio.to_thread(scrape, port)
        assert during[("gatewayd_uplink_connected", ())] == 0
        assert during[("gatewayd_queue_samples", ())] >= 10
        points = during[("gatewayd_queue_points", ())]
        assert points == during[("gatewayd_queue_samples", ())] * len(KNOWN_POINTS)
        assert during[("gatewayd_queue_oldest_age_seconds", ())] > 0
        assert during[("gatewayd_polls_total", (("device", "dev1"), ("result", "ok")))] > 10
        assert during[("gatewayd_device_up", (("device", "dev1"),))] == 1
        assert during[("gatewayd_bad_values_total", (("device", "dev1"),))] == 0
        assert during[("gatewayd_replies_dropped_total", ())] == 0
        assert await asyncio.to_thread(healthz, port) == 200  # offline is not unhealthy
        broker.start()
        await asyncio.wait_for(daemon.session.connected.wait(), 15)
        while daemon.health.snapshot.queue.pending > 5:  # the backlog drains
            daemon.forwarder.progress.clear()
            await asyncio.wait_for(daemon.forwarder.progress.wait(), 10)
            await daemon.health.tick()
        after = await asyncio.to_thread(scrape, port)
        daemon.health.writer_ok = False  # as after a ping the writer thread did not answer
        daemon.health.publish()
        assert await asyncio.to_thread(healthz, port) == 503
    assert after[("gatewayd_uplink_connected", ())] == 1
    assert after[("gatewayd_sent_samples_total", ())] > during[("gatewayd_sent_samples_total", ())]
    assert after[("gatewayd_replies_total", (("code", "200"),))] > 0
    assert after[("gatewayd_queue_samples", ())] <= 5


async def test_refused_reads_are_counted_per_device(
    tmp_path: Path, broker: Broker, hub: HubSimulator, known_modbus: KnownModbusServer
) -> None:
    """A point on an unmapped address: the device is up, but its refused reads show."""
    port = free_port()
    points = [*KNOWN_POINTS, {"id": "Ghost", "table": "holding", "address": 50}]
    devices = [modbus_device("dev1", known_modbus.port, 1, points, 0.1)]
    settings = gateway_config(
        tmp_path, broker.port, devices, metrics={"listen": f"127.0.0.1:{port}"}
    )
    async with running(settings, hub) as daemon:
        await asyncio.to_thread(hub.wait_for, lambda h: h.delivered_count() >= 3, 20)
        await daemon.health.tick()  # metrics read the snapshot the health tick takes
        figures = await asyncio.to_thread(scrape, port)
    refused = figures[("gatewayd_refused_reads_total", (("device", "dev1"),))]
    polls_refused = figures[("gatewayd_polls_total", (("device", "dev1"), ("result", "refused")))]
    assert refused >= 3 and polls_refused >= 3
    assert figures[("gatewayd_polls_total", (("device", "dev1"), ("result", "ok")))] == 0
    assert figures[("gatewayd_device_up", (("device", "dev1"),))] == 1
