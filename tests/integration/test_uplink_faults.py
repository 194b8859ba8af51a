"""The uplink faults of issue 15 against a real mosquitto, the hub simulator and the daemon.

Each test here reproduced a way the uplink wedged, starved a device or hid one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.errors import GatewaydError
from gatewayd.forward.replies import REJECTED_LOCALLY
from gatewayd.model import Sample
from gatewayd.queue.store import read_stats
from gatewayd.runtime.daemon import Daemon
from gatewayd.runtime.metrics import GatewayCollector
from gatewayd.sim.broker import free_port
from gatewayd.sim.hub import HubSimulator
from gatewayd.sim.mosquitto import MosquittoBroker
from gatewayd.sim.relay import Relay
from tests.integration.test_uplink import (
    HOUR_AGO_MS,
    config,
    drained,
    old_samples,
    prefill,
    rejected_rows,
    silent_devices,
    until,
)
from tests.support.brokers import Broker
from tests.support.daemon import gateway_config, modbus_device, running


def metric(daemon: Daemon, name: str) -> float:
    """One counter's value as the metrics endpoint would show it."""
    collector = GatewayCollector(daemon.queue.path, daemon.health.refresh)
    family = next(m for m in collector.collect() if m.name == name)
    return sum(s.value for s in family.samples if s.name == name + "_total")


async def parks(daemon: Daemon, key: tuple[str, str], n: int, timeout_s: float) -> None:
    """Wait until the device was parked n times."""
    topology = daemon.topology
    async with asyncio.timeout(timeout_s):
        while topology.park_counts.get(key, 0) < n:
            topology.parked_signal.clear()
            await topology.parked_signal.wait()


async def publishes_dropped(relay: Relay, n: int, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while relay.dropped_publish < n:
            relay.publish_dropped.clear()
            await relay.publish_dropped.wait()


async def test_a_link_that_drops_publish_packets_is_reconnected(
    tmp_path: Path, broker: Broker, hub: HubSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """PINGREQ passes, PUBLISH does not: paho's window of 20 unacknowledged messages fills and
    nothing more is ever sent, on a session that still looks connected. It must be declared
    dead and reconnected, and the backlog must drain once the path is healthy."""
    relay = Relay("127.0.0.1", broker.port)
    port = await relay.start()
    try:
        settings = gateway_config(
            tmp_path,
            port,
            silent_devices("dev1"),
            forward={"reply_timeout_s": 1, "batch_max_samples": 10, "inflight": 4},
        )
        await prefill(settings.queue.path, old_samples("dev1", 2000))
        async with running(settings, hub) as daemon:
            await until(hub, lambda h: h.delivered_count() >= 100)
            relay.drop_publish()
            await publishes_dropped(relay, 20)
            relay.restore()
            await drained(daemon, hub, 2000, timeout_s=30)
            stalls = daemon.session.stalls
            assert stalls >= 1
            assert metric(daemon, "gatewayd_uplink_stalls") == stalls
    finally:
        await relay.stop()
    assert read_stats(settings.queue.path).pending_samples == 0
    logged = [r for r in caplog.records if r.getMessage().startswith("uplink_stalled")]
    assert len(logged) == stalls  # once per dead session, not once per request


@pytest.fixture
def small_packet_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A mosquitto that drops a client sending a packet over 16 KB, as the issue's hub did."""
    instance = MosquittoBroker(tmp_path, extra="max_packet_size 16384\n")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


async def test_a_sample_too_large_for_any_request_is_dead_lettered_locally(
    tmp_path: Path, small_packet_broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """One sample of ~40 KB ahead of another device's backlog, a request cap of 8 KB and a broker
    that drops oversize packets: the sample goes to `rejected` with a local reason, never to the
    broker, and the rest drains."""
    hub = HubSimulator("127.0.0.1", small_packet_broker.port)
    hub.start()
    try:
        settings = gateway_config(
            tmp_path,
            small_packet_broker.port,
            silent_devices("big", "small"),
            forward={"batch_max_bytes": 8192, "batch_max_samples": 20},
        )
        huge = Sample("subPK", "big", HOUR_AGO_MS - 1000, {"P": "x" * 40_000})
        await prefill(settings.queue.path, [huge, *old_samples("small", 100)])
        async with running(settings, hub) as daemon:
            await drained(daemon, hub, 101, timeout_s=20)
            assert daemon.session.stalls == 0
    finally:
        hub.stop()
    assert {d.device_key for d in hub.deliveries} == {"small"}
    assert hub.delivered_count() == 100
    [(ts, code, message)] = rejected_rows(settings.queue.path)
    assert (ts, code) == (huge.ts_ms, REJECTED_LOCALLY)
    assert "batch_max_bytes" in message
    assert not [r for r in caplog.records if r.getMessage().startswith("uplink_lost")]


async def test_a_parked_device_without_secret_does_not_starve_the_others(
    tmp_path: Path, broker: Broker, hub: HubSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A device the hub answers 1212 for ever (no secret: no login of ours can fix it) with
    200,000 rows ahead of a healthy device's 20,000: the healthy backlog must drain, the parked
    rows must not be re-read at every unpark, and the parked device must be retried with a
    growing delay."""
    devices = silent_devices("lost", "good")
    devices[0].pop("device_secret")
    settings = gateway_config(
        tmp_path, broker.port, devices, forward={"batch_max_samples": 500, "inflight": 4}
    )
    await prefill(settings.queue.path, old_samples("lost", 200_000) + old_samples("good", 20_000))
    hub.register("subPK", "good", "secret-of-good")
    async with running(settings) as daemon:
        await until(hub, lambda h: sum(d.device_key == "good" for d in h.deliveries) >= 20_000, 40)
        await daemon.forwarder.wait_inflight(5)
        # Only the rows worth sending are read: not the parked ones again at every unpark.
        assert daemon.forwarder.rows_read < 50_000, daemon.forwarder.rows_read
        await parks(daemon, ("subPK", "lost"), 3, timeout_s=30)
    assert {d.device_key for d in hub.deliveries} == {"good"}
    assert read_stats(settings.queue.path).pending_samples == 200_000  # lost's, all kept
    delays = [
        float(r.getMessage().split("retry_in_s=")[1].split()[0])
        for r in caplog.records
        if r.getMessage().startswith("sub_device_parked device=subPK/lost")
    ]
    assert len(delays) >= 3 and delays == sorted(delays) and delays[-1] > delays[0], delays


@pytest.mark.parametrize("code", [1220, 1204, 1206])
async def test_a_hub_that_refuses_everything_dead_letters_nothing(
    tmp_path: Path, broker: Broker, hub: HubSimulator, code: int
) -> None:
    """The hub answers a content code to every data request for a while, across devices: that
    is the hub's fault, not the samples'. They stay queued and go once it accepts again."""
    settings = config(tmp_path, broker, silent_devices("a", "b"), batch_max_samples=50)
    samples = [
        s for pair in zip(old_samples("a", 300), old_samples("b", 300), strict=True) for s in pair
    ]
    await prefill(settings.queue.path, samples)
    hub.set_faults(reply_code=code)
    async with running(settings, hub) as daemon:
        await until(hub, lambda h: sum(r.code == code for r in h.requests) >= 40)
        hub.set_faults(reply_code=200)
        await until(hub, lambda h: h.delivered_count() >= 600, 30)
        await daemon.forwarder.wait_inflight(5)
        assert daemon.forwarder.handler.storms >= 1
    assert read_stats(settings.queue.path).rejected == 0
    assert read_stats(settings.queue.path).pending_samples == 0
    assert sorted(d.ts_ms for d in hub.deliveries if d.device_key == "a") == [
        s.ts_ms for s in old_samples("a", 300)
    ]


async def test_an_error_in_the_mqtt_thread_stops_the_daemon_loudly(
    tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception escaping paho's callbacks killed its thread silently: the daemon polled and
    queued but never forwarded, and looked healthy. Here paho refuses a subscription filter
    (as it did for a gateway key with `#`): the daemon must end with the error named."""
    settings = config(tmp_path, broker, silent_devices("dev1"))
    daemon = Daemon(settings, shutdown_timeout_s=1.0)
    daemon.session.topics.append("bad/#/filter")  # a filter paho refuses in on_connect
    async with asyncio.timeout(30):
        with pytest.raises(GatewaydError, match="Invalid subscription filter"):
            await daemon.run(asyncio.Event())
    assert daemon.session.thread_errors >= 1
    assert any(r.getMessage().startswith("uplink_thread_error") for r in caplog.records)


async def test_topology_and_login_of_a_thousand_devices_fit_the_size_cap(
    tmp_path: Path, small_packet_broker: MosquittoBroker
) -> None:
    """topo.add and combine.login.batch for 1,000 sub-devices (~200 KB and ~130 KB in one
    request) are split under forward.batch_max_bytes; the broker here drops a client sending
    a packet over 16 KB, so one oversized request would keep the gateway from ever syncing."""
    hub = HubSimulator("127.0.0.1", small_packet_broker.port)
    hub.start()
    try:
        port = free_port()
        devices = [
            modbus_device(f"d{n:04d}", port, 1, [{"id": "P", "address": 0}], 3600.0)
            for n in range(1000)
        ]
        settings = gateway_config(
            tmp_path, small_packet_broker.port, devices, forward={"batch_max_bytes": 8192}
        )
        async with running(settings, hub, timeout_s=60) as daemon:
            async with asyncio.timeout(60):
                await daemon.topology.ready.wait()
            assert daemon.session.connected.is_set()
            assert len(daemon.topology.online) == 1000
            assert len(hub.online(("gwPK", "gw001"))) == 1000
    finally:
        hub.stop()
