"""The uplink over a thin field link (gatewayd/sim/link.py between the daemon and mosquitto).

On loopback every reply comes back in milliseconds, so a window of requests that is many
times what the link moves in a round trip looks harmless. On a thin link the last request of
such a window waits behind the others' bytes longer than `reply_timeout_s`: the hub stores it
and answers 200, the answer comes too late, the rows are sent again, and the link carries
duplicates while it should drain.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatewayd.queue.store import read_stats
from gatewayd.sim.hub import HubSimulator
from gatewayd.sim.link import LinkEmulator
from tests.integration.test_uplink import drained, old_samples, prefill, silent_devices
from tests.support.brokers import Broker
from tests.support.daemon import gateway_config, running

#: 64 kbit/s, 300 ms: a 100-sample request of ~8 KB takes ~1 s to serialise, so four of them
#: in flight put the fourth's reply ~4.3 s after it was published.
RATE_BPS, RTT_S = 64_000, 0.3
SAMPLES = 1200


@pytest.fixture
async def thin_link(broker: Broker) -> AsyncIterator[LinkEmulator]:
    link = LinkEmulator("127.0.0.1", broker.port, RATE_BPS, RTT_S)
    await link.start()
    try:
        yield link
    finally:
        await link.stop()


async def test_requests_the_hub_answers_never_time_out_on_a_thin_link(
    tmp_path: Path, thin_link: LinkEmulator, hub: HubSimulator
) -> None:
    """~100 KB of backlog over 64 kbit/s with a 3 s reply deadline and 4 requests of 100
    samples allowed in flight: every request is answered 200 by the hub, none may time out,
    and no sample may reach the hub twice."""
    settings = gateway_config(
        tmp_path,
        thin_link.port,
        silent_devices("dev1"),
        forward={"reply_timeout_s": 3, "batch_max_samples": 100, "inflight": 4},
    )
    await prefill(settings.queue.path, old_samples("dev1", SAMPLES))
    async with running(settings, hub) as daemon:
        await drained(daemon, hub, SAMPLES, timeout_s=40)
        replies = dict(daemon.forwarder.replies)
    stored = Counter((d.device_key, d.ts_ms) for d in hub.deliveries)
    duplicates = sum(n - 1 for n in stored.values())
    assert replies.get("timeout", 0) == 0, replies
    assert duplicates == 0
    assert len(stored) == SAMPLES
    assert read_stats(settings.queue.path).pending_samples == 0
    # The link was the limit, not the window: ~100 KB at 8 KB/s is ~13 s.
    assert thin_link.up.busy_s > 0


async def test_the_emulator_paces_at_the_set_rate(thin_link: LinkEmulator) -> None:
    """64 KB through the emulator take ~8 s of link time and arrive no sooner than that
    plus half a round trip (the emulator's own self-check; bench/link_check.py does it
    against paho at the three field links)."""
    server_got = asyncio.get_running_loop().create_future()
    received = bytearray()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while len(received) < 16384:
            chunk = await reader.read(65536)
            if not chunk:
                break
            received.extend(chunk)
        server_got.set_result(asyncio.get_running_loop().time())
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    link = LinkEmulator("127.0.0.1", server.sockets[0].getsockname()[1], RATE_BPS, RTT_S)
    port = await link.start()
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = asyncio.get_running_loop().time()
        writer.write(b"x" * 16384)
        await writer.drain()
        arrived = await asyncio.wait_for(server_got, 10)
        writer.close()
    finally:
        await link.stop()
        server.close()
    took = arrived - started
    serialise = 16384 * 8 / RATE_BPS  # 2.05 s
    assert serialise + RTT_S / 2 - 0.05 <= took <= serialise + RTT_S / 2 + 0.3
    assert link.up.bytes == 16384
