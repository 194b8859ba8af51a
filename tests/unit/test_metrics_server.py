"""/metrics and /healthz over real HTTP, from snapshots only; stopping never blocks the loop."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gatewayd.runtime.metrics import GatewayCollector, MetricsServer
from gatewayd.runtime.snapshots import ForwarderStats, PollerStats, QueueFigures, Snapshot
from gatewayd.sim.broker import free_port


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


async def test_healthz_names_the_stale_stage_and_metrics_come_from_the_snapshot(
    tmp_path: Path,
) -> None:
    snapshot = Snapshot(
        queue=QueueFigures(pending=7, points_per_sample=3.0),
        forwarder=ForwarderStats(delivered=5, replies=(("1204", 1), ("200", 4))),
        pollers=(
            PollerStats(
                "dev1",
                10,
                2,
                1,
                0,
                0.5,
                1.0,
                False,
                successes=8,
                endpoint="rtu:/dev/ttyS1",
                late_discarded=3,
                strays=2,
                doubtful=4,
                noise_bytes=17,
                suppressed=40,
                deadband_resets=2,
            ),
        ),
        connected=True,
    )
    problem: list[str | None] = [None]
    ticks: list[int] = []
    server = MetricsServer(
        ("127.0.0.1", free_port()),
        GatewayCollector(tmp_path / "q.db", lambda: snapshot),
        lambda: problem[0],
        on_tick=lambda: ticks.append(1),
    )
    server.start()
    try:
        assert await asyncio.to_thread(get, server.port, "/healthz") == (200, "ok\n")
        problem[0] = "stale: forwarder (31.0s)"
        assert await asyncio.to_thread(get, server.port, "/healthz") == (
            503,
            "stale: forwarder (31.0s)\n",
        )
        _, text = await asyncio.to_thread(get, server.port, "/metrics")
    finally:
        await server.aclose()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("gatewayd_queue_samples", ())] == 7
    assert values[("gatewayd_queue_points", ())] == 21
    assert values[("gatewayd_replies_total", (("code", "1204"),))] == 1
    assert values[("gatewayd_polls_total", (("device", "dev1"), ("result", "ok")))] == 8
    assert values[("gatewayd_uplink_connected", ())] == 1
    line = (("endpoint", "rtu:/dev/ttyS1"),)
    assert values[("gatewayd_late_answers_discarded_total", line)] == 3
    assert values[("gatewayd_stray_frames_total", line)] == 2
    assert values[("gatewayd_doubtful_answers_total", line)] == 4
    assert values[("gatewayd_line_noise_bytes_total", line)] == 17
    assert values[("gatewayd_points_suppressed_total", (("device", "dev1"),))] == 40
    assert values[("gatewayd_deadband_resets_total", (("device", "dev1"),))] == 2
    assert ticks  # the server's thread ran its between-requests hook


def test_a_snapshot_cannot_be_changed_in_place() -> None:
    snapshot = Snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.rate = 1.0  # type: ignore[misc]
    assert isinstance(snapshot.forwarder.replies, tuple)


async def test_stopping_the_server_leaves_the_loop_running() -> None:
    server = MetricsServer(
        ("127.0.0.1", free_port()),
        GatewayCollector(Path("unused.db"), Snapshot),
        lambda: None,
    )
    server.start()
    spins = 0

    async def spin() -> None:
        nonlocal spins
        while True:
            spins += 1
            await asyncio.sleep(0)

    spinner = asyncio.create_task(spin())
    await asyncio.sleep(0)
    before = spins
    async with asyncio.timeout(5):
        await server.aclose()  # serve_forever notices within its 0.5 s poll
    spinner.cancel()
    assert spins - before > 10
