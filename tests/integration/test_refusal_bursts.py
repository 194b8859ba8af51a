"""Refuse-everything bursts of good data, against a real mosquitto, the hub simulator and the
daemon: nothing may be dead-lettered (forward/refusal_evidence.py). Found by an adversary:

- a burst that begins while several requests are in flight: a 200 answered just before it, whose
  rows were still being deleted when a refusal came, counted as 'the hub took others since' and
  dead-lettered 5 to 20 good samples of a 400-sample drain;
- two bursts either side of a broker outage that began while the forwarder was backing off (no
  request out, so none failed for want of a reply): the run of refusals spanned the outage and
  the second burst dead-lettered every sample.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from gatewayd.forward.refusal_evidence import PERSIST_S
from gatewayd.model import Sample
from gatewayd.runtime.daemon import Daemon
from gatewayd.sim.hub import HubSimulator
from tests.integration.test_uplink import (
    config,
    drained,
    old_samples,
    prefill,
    rejected_rows,
    silent_devices,
    until,
)
from tests.support.brokers import FrontedBroker
from tests.support.daemon import modbus_device, running
from tests.support.modbus import KNOWN_POINTS, KnownModbusServer


class BurstAfter:
    """The hub refuses every data request with 1220 from the one after the `after`-th on, until
    the test ends it: a burst that begins while requests are in flight."""

    def __init__(self, hub: HubSimulator, after: int) -> None:
        self.hub = hub
        self.after = after
        self.seen = 0
        self.began = False
        hub.on_event = self._event

    def _event(self, event: dict[str, Any]) -> None:
        """The hub's thread, under its lock, once each request's answer is decided."""
        if event.get("kind") != "data":
            return
        self.seen += 1
        if self.seen == self.after:
            self.hub.set_faults(reply_code=1220)
            self.began = True


def interleaved(devices: list[str], n: int) -> list[Sample]:
    """n old samples of each device, taken in turn."""
    groups = zip(*(old_samples(device, n) for device in devices), strict=True)
    return [sample for group in groups for sample in group]


async def burst_over(daemon: Daemon, storms: int = 3, timeout_s: float = 30.0) -> None:
    """Until `storms` more batches were put down to a storm (or, the defect, anything was
    dead-lettered). Watched on the daemon's side: the hub's waits look again only when a
    message comes, which after a storm is the forwarder's next try, a backoff later."""
    forwarder = daemon.forwarder
    until = forwarder.storms + storms
    async with asyncio.timeout(timeout_s):
        while forwarder.storms < until and not forwarder.rejected:  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("after", [2, 5])
@pytest.mark.parametrize("batch", [5, 20])
async def test_a_burst_that_begins_mid_pipeline_dead_letters_nothing(
    tmp_path: Path, broker: FrontedBroker, hub: HubSimulator, batch: int, after: int
) -> None:
    """Two devices, four requests in flight; the hub takes the first `after` requests, then
    refuses everything until three batches were put down to the storm, then takes all."""
    samples = interleaved(["dev1", "dev2"], 200)
    settings = config(
        tmp_path, broker, silent_devices("dev1", "dev2"), batch_max_samples=batch, inflight=4
    )
    await prefill(settings.queue.path, samples)
    burst = BurstAfter(hub, after)
    async with running(settings, hub) as daemon:
        await until(hub, lambda h: burst.began)
        await burst_over(daemon)
        hub.set_faults(reply_code=200)
        await drained(daemon, hub, len(samples), timeout_s=60)
    assert rejected_rows(settings.queue.path) == []
    assert sorted(d.ts_ms for d in hub.deliveries) == sorted(s.ts_ms for s in samples)


RETRY_S = 3.0


def stepped_clock(daemon: Daemon) -> list[float]:
    """The reply handler's monotonic clock, plus skew[0] seconds the test adds."""
    skew = [0.0]
    daemon.forwarder.handler.clock = lambda: time.monotonic() + skew[0]
    return skew


@pytest.mark.parametrize("devices", [1, 2])
async def test_bursts_either_side_of_a_broker_outage_dead_letter_nothing(
    tmp_path: Path, broker: FrontedBroker, hub: HubSimulator, devices: int
) -> None:
    """A burst (three batches put down to it), the broker down for most of a minute (the
    handler's clock is stepped) while the forwarder backs off, a second burst: two short
    bursts, not one long one. The backoff is its full RETRY_S, without jitter, so that the
    outage falls within it: no request is out to fail for want of a reply. (The broker's front
    goes down, not the hub simulator's own connection: a request that found the hub not yet
    back would time out and end the run today, hiding the defect.)"""
    names = [f"dev{i}" for i in range(devices)]
    samples = interleaved(names, 20)
    settings = config(
        tmp_path,
        broker,
        silent_devices(*names),
        batch_max_samples=10,
        retry_min_s=RETRY_S,
        retry_max_s=RETRY_S,
    )
    await prefill(settings.queue.path, samples)
    hub.set_faults(reply_code=1220)
    async with running(settings, hub) as daemon:
        skew = stepped_clock(daemon)
        daemon.forwarder._rand = lambda: 1.0
        await burst_over(daemon)
        assert await daemon.forwarder.wait_inflight(10) == 0  # backing off: nothing out
        broker.stop_front()
        await asyncio.wait_for(daemon.session.disconnected.wait(), 10)
        skew[0] += PERSIST_S - 2
        broker.start_front()
        await burst_over(daemon)
        hub.set_faults(reply_code=200)
        await drained(daemon, hub, len(samples))
    assert rejected_rows(settings.queue.path) == []
    assert hub.delivered_count() == len(samples)


@pytest.mark.parametrize("inflight", [1, 4])
async def test_one_devices_refused_samples_are_no_storm_for_the_others(
    tmp_path: Path, broker: FrontedBroker, hub: HubSimulator, inflight: int
) -> None:
    """Every sample of dev1 carries a point the model lacks (1204), dev2's are good, taken in
    turn: dev1's are dead-lettered on the evidence of dev2's 200s, with no storm, no backoff.
    Found by an operator test: each lone refusal was first put down to 'the hub refuses
    everything' and sending backed off, slowing dev2's live data (median 0.13 -> 0.54 s)."""
    bad = old_samples("dev1", 30, {i: {"Bogus": i} for i in range(30)})
    samples = [s for pair in zip(bad, old_samples("dev2", 30), strict=True) for s in pair]
    settings = config(
        tmp_path, broker, silent_devices("dev1", "dev2"), batch_max_samples=10, inflight=inflight
    )
    await prefill(settings.queue.path, samples)
    hub.set_model("subPK", {"P"})
    async with running(settings, hub) as daemon:
        await drained(daemon, hub, len(samples), timeout_s=60)
        storms = daemon.forwarder.storms
    assert storms == 0
    assert [r[0] for r in rejected_rows(settings.queue.path)] == sorted(s.ts_ms for s in bad)
    assert {d.device_key for d in hub.deliveries} == {"dev2"} and len(hub.deliveries) == 30


async def test_one_live_devices_refused_point_is_no_storm_for_the_others(
    tmp_path: Path,
    broker: FrontedBroker,
    hub: HubSimulator,
    known_modbus: KnownModbusServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Live: dev1 reads a point the model lacks (T), dev2 only good ones. A live request may hold
    one sample of dev1 alone; its refusal is no storm while dev2's samples are taken. Found by
    an operator test: every such refusal was first put down to 'the hub refuses everything',
    sending backed off, and dev2's readings waited (median 0.13 -> 0.54 s, max 2.3 s): 9 or 10
    storms for 10 dead letters. Now the lone refusal is held aside (forward/held_refusal.py)
    and asked again once the hub takes one of dev2's later requests."""
    devices = [
        modbus_device("dev1", known_modbus.port, 1, KNOWN_POINTS, 0.2),
        modbus_device("dev2", known_modbus.port, 2, KNOWN_POINTS[:1], 0.2),
    ]
    settings = config(tmp_path, broker, devices)
    async with running(settings, hub) as daemon:
        hub.set_model("subPK", {"P", "U", "E", "Q"})  # registering the devices set theirs
        modelled = time.time()
        await until(hub, lambda h: len(rejected_rows(settings.queue.path)) >= 10, 30)
        storms = daemon.forwarder.storms
        held = daemon.forwarder.handler.holding.count
    assert storms == 0
    assert not [r for r in caplog.records if "hub_refuses_everything" in r.getMessage()]
    assert {code for _, code, _ in rejected_rows(settings.queue.path)} == {1204}
    assert held > 0  # the live case was met: dev1's samples alone in a request
    assert {d.device_key for d in hub.deliveries} == {"dev2"}
    # dev2's readings kept flowing while dev1's were dead-lettered, and none waited a backoff
    # (forward.retry_min_s = 1 s; before the fix the slowest waited 2.3 s).
    taken = [d for d in hub.deliveries if d.ts_ms / 1000 > modelled]
    assert len(taken) >= 10
    assert max(d.received_s - d.ts_ms / 1000 for d in taken) < 1.0


async def test_two_live_devices_with_a_wrong_model_do_not_hold_up_a_good_one(
    tmp_path: Path, broker: FrontedBroker, hub: HubSimulator, known_modbus: KnownModbusServer
) -> None:
    """Found by an adversary: bad1 and bad2 read a point the model lacks, good does not. Each
    bisection ended on lone refusals of bad1 and bad2, 'a storm', backoff, and the retry began
    with the same oldest rows: good delivered nothing for ~60 s (until the refusal persisted),
    and again after every 200. Now the two lone refusals are set aside together, the rest goes
    at once, and good's 200s are the evidence that dead-letters them."""
    devices = [
        modbus_device("bad1", known_modbus.port, 1, KNOWN_POINTS, 0.2),
        modbus_device("bad2", known_modbus.port, 2, KNOWN_POINTS, 0.2),
        modbus_device("good", known_modbus.port, 1, KNOWN_POINTS[:1], 0.2),
    ]
    settings = config(tmp_path, broker, devices)
    async with running(settings, hub):
        hub.set_model("subPK", {"P", "U", "E", "Q"})  # registering the devices set theirs
        modelled = time.time()

        def read_since(h: HubSimulator) -> list[Any]:
            return [d for d in h.deliveries if d.ts_ms / 1000 > modelled + 1]

        await until(hub, lambda h: len(rejected_rows(settings.queue.path)) >= 20, 30)
        await until(hub, lambda h: len(read_since(h)) >= 5, 30)  # before: ~60 s, none
        taken = read_since(hub)
    assert {d.device_key for d in hub.deliveries} == {"good"}
    assert max(d.received_s - d.ts_ms / 1000 for d in taken) < 3.0
    assert {code for _, code, _ in rejected_rows(settings.queue.path)} == {1204}
