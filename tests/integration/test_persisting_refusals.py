"""Content refusals that persist, against a real mosquitto, the hub simulator and the daemon.

The hub's model refuses every sample of the bad devices (a point it does not know: 1204) and
nothing else answers 200 meanwhile, because the good device's rows wait behind them in the
queue. The handler's clock is stepped instead of waiting out the confirmation window.
"""

from __future__ import annotations

import time
from pathlib import Path

from gatewayd.forward.refusal_evidence import PERSIST_S
from gatewayd.model import Sample
from gatewayd.queue.store import read_stats
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
from tests.support.brokers import Broker
from tests.support.daemon import running

FAST_RETRY = {"retry_min_s": 0.05, "retry_max_s": 0.2}


def wrong_model(device: str, n: int) -> list[Sample]:
    """Samples with a point the hub's model does not have: every one is refused 1204."""
    return old_samples(device, n, {i: {"Bogus": i} for i in range(n)})


def stepped_clock(daemon: Daemon) -> list[float]:
    """The reply handler's monotonic clock, plus skew[0] seconds the test adds."""
    skew = [0.0]
    daemon.forwarder.handler.clock = lambda: time.monotonic() + skew[0]
    return skew


async def refused_for_good(daemon: Daemon, hub: HubSimulator, skew: list[float]) -> None:
    """Three batches refused in a short burst dead-letter nothing; then the window passes."""
    await until(hub, lambda h: daemon.forwarder.storms >= 3)
    assert daemon.forwarder.rejected == 0 and hub.delivered_count() == 0
    skew[0] += PERSIST_S


async def test_a_lone_device_with_a_wrong_model_and_small_batches_is_dead_lettered(
    tmp_path: Path, broker: Broker, hub: HubSimulator
) -> None:
    """batch_max_samples = 3: no bisection ever held four lone samples, so the device's
    refusals were a storm for ever and the good device's rows behind them never went."""
    settings = config(
        tmp_path, broker, silent_devices("bad", "good"), batch_max_samples=3, **FAST_RETRY
    )
    await prefill(settings.queue.path, wrong_model("bad", 30) + old_samples("good", 10))
    async with running(settings, hub) as daemon:
        await refused_for_good(daemon, hub, stepped_clock(daemon))
        await drained(daemon, hub, 40)
    rows = rejected_rows(settings.queue.path)
    assert [ts for ts, _, _ in rows] == [s.ts_ms for s in wrong_model("bad", 30)]
    assert all(code == 1204 and "Bogus" in message for _, code, message in rows)
    assert read_stats(settings.queue.path).pending_samples == 0
    assert sorted(d.ts_ms for d in hub.deliveries) == [s.ts_ms for s in old_samples("good", 10)]


async def test_two_devices_with_the_same_wrong_model_are_dead_lettered(
    tmp_path: Path, broker: Broker, hub: HubSimulator
) -> None:
    """Every bisection met lone samples of two devices: a storm, for ever."""
    settings = config(
        tmp_path,
        broker,
        silent_devices("bad1", "bad2", "good"),
        batch_max_samples=10,
        **FAST_RETRY,
    )
    pairs = zip(wrong_model("bad1", 20), wrong_model("bad2", 20), strict=True)
    bad = [sample for pair in pairs for sample in pair]
    await prefill(settings.queue.path, bad + old_samples("good", 10))
    async with running(settings, hub) as daemon:
        await refused_for_good(daemon, hub, stepped_clock(daemon))
        await drained(daemon, hub, 50)
    rows = rejected_rows(settings.queue.path)
    assert len(rows) == 40 and all(code == 1204 and "Bogus" in m for _, code, m in rows)
    assert read_stats(settings.queue.path).pending_samples == 0
    assert sorted(d.ts_ms for d in hub.deliveries) == [s.ts_ms for s in old_samples("good", 10)]
    assert {d.device_key for d in hub.deliveries} == {"good"}
