"""A hub answering 1212 to every data request, with two sub-devices that log in fine (F9).

Against a real mosquitto, the hub simulator and the daemon. The operator saw each meter parked
for 5 s and unparked within half a second (the other meter's repair logged it in again), `times`
stuck at 1, and 55 `thing.topo.get` in 10 s. A park must hold for its delay, grow at each
further park, and the hub must not be asked for the topology again and again.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from gatewayd.enos.protocol import METHOD_LOGIN_BATCH, METHOD_TOPO_GET
from gatewayd.queue.store import read_stats
from gatewayd.sim.hub import HubSimulator
from tests.integration.test_uplink import config, drained, old_samples, prefill, silent_devices
from tests.integration.test_uplink_faults import parks
from tests.support.brokers import Broker
from tests.support.daemon import running

M1, M2 = ("subPK", "m1"), ("subPK", "m2")
PARK = re.compile(r"sub_device_parked device=subPK/(\w+) .*retry_in_s=([\d.]+) times=(\d+)")
UNPARK = re.compile(r"sub_device_unparked device=subPK/(\w+)")


def park_lines(records: list[logging.LogRecord], name: str) -> list[tuple[float, float, int]]:
    """(when, retry_in_s, times) of each park of the device, in order."""
    found = [(r.created, PARK.match(r.getMessage())) for r in records]
    return [(at, float(m[2]), int(m[3])) for at, m in found if m and m[1] == name]


def unpark_times(records: list[logging.LogRecord], name: str) -> list[float]:
    found = [(r.created, UNPARK.match(r.getMessage())) for r in records]
    return [at for at, m in found if m and m[1] == name]


async def test_a_hub_refusing_all_data_with_1212_parks_each_device_for_longer_each_time(
    tmp_path: Path, broker: Broker, hub: HubSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd.enos.topology")
    # Parks of 0.5, 1, 2, 4 s; each request carries one device's rows, as with the operator's
    # meters polled once a second.
    forward = {"retry_min_s": 0.1, "retry_max_s": 0.8, "batch_max_samples": 50, "inflight": 1}
    settings = config(tmp_path, broker, silent_devices("m1", "m2"), **forward)
    await prefill(settings.queue.path, old_samples("m1", 200) + old_samples("m2", 200))
    events: list[dict[str, Any]] = []
    hub.on_event = events.append
    hub.set_faults(reply_code=1212)
    async with running(settings, hub) as daemon:
        await parks(daemon, M1, 4, timeout_s=30)
        await parks(daemon, M2, 4, timeout_s=30)
        records = list(caplog.records)
        gets = sum(e["kind"] == METHOD_TOPO_GET for e in events)
        logins = sum(e["kind"] == METHOD_LOGIN_BATCH for e in events)
        refused = sum(r.code == 1212 for r in hub.requests)
        hub.set_faults(reply_code=200)
        await drained(daemon, hub, 400, timeout_s=30)
    for name in ("m1", "m2"):
        parked = park_lines(records, name)[:4]
        assert [(delay, times) for _, delay, times in parked] == [
            (0.5, 1),
            (1.0, 2),
            (2.0, 3),
            (4.0, 4),
        ], parked
        # Each park held for its delay: the device was not unparked before its time was up.
        unparked = unpark_times(records, name)
        for (at, delay, _), back in zip(parked, unparked, strict=False):
            assert back >= at + delay - 0.05, (name, at, delay, back)
    # The connect's sync, then one repair per device at the first 1212; the retries log the
    # parked devices in, and nothing asks for the topology again.
    unparks = len(unpark_times(records, "m1")) + len(unpark_times(records, "m2"))
    assert gets <= 3, gets
    assert logins <= gets + unparks, (logins, gets, unparks)
    # Each try of a device costs at most one window of requests (forward.inflight).
    tries = unparks + 2
    assert refused <= tries * (settings.forward.inflight + 1), (refused, tries)
    # Nothing was lost or sent twice.
    assert read_stats(settings.queue.path).pending_samples == 0
    for name in ("m1", "m2"):
        sent = sorted(d.ts_ms for d in hub.deliveries if d.device_key == name)
        assert sent == [s.ts_ms for s in old_samples(name, 200)]
