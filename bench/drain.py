"""Drain benchmark: how fast a backlog leaves the queue, next to a bare paho publish loop.

    python bench/drain.py [--samples 100000] [--batches 100,500] [--inflight 1,4,8]

A queue is pre-filled with samples of 10 points from 100 sub-devices, mosquitto runs on
loopback, the hub simulator answers 200 (open mode: no logins, to measure the data path), and
the real daemon drains until the queue is empty. The same request bytes published by a bare
paho loop at QoS 1 without SQLite or replies give the practical limit. Prints a table and
writes bench/results/drain.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gatewayd.config import QueueConfig, build_config  # noqa: E402
from gatewayd.daemon import Daemon  # noqa: E402
from gatewayd.enos.protocol import METHOD_RESUME_BATCH, batch_element, batch_request  # noqa: E402
from gatewayd.model import QueuedSample, Sample  # noqa: E402
from gatewayd.queue import SampleQueue  # noqa: E402
from gatewayd.sim.hub import HubSimulator  # noqa: E402
from gatewayd.sim.mosquitto import MosquittoBroker  # noqa: E402

POINTS = 10
DEVICES = 100


def sample(i: int, base_ms: int) -> Sample:
    points = {f"P{k}": round(i * 0.001 + k, 3) for k in range(POINTS)}
    return Sample("benchPK", f"dev{i % DEVICES:03d}", base_ms + i, points)


async def prefill(path: Path, n: int) -> None:
    queue = SampleQueue(QueueConfig(path=path, synchronous="normal"))
    await queue.open()
    base = int(time.time() * 1000) - 3_600_000  # an hour old: backfill
    for start in range(0, n, 10_000):
        for i in range(start, min(n, start + 10_000)):
            queue.put(sample(i, base))
        await queue.flush()
    await queue.close()


async def drain(broker_port: int, path: Path, n: int, batch: int, inflight: int) -> float:
    settings = build_config(
        {
            "gateway": {"product_key": "gwPK", "device_key": "gw", "device_secret": "s"},
            "mqtt": {"port": broker_port},
            "queue": {"path": str(path), "synchronous": "full"},
            "forward": {"batch_max_samples": batch, "inflight": inflight, "reply_timeout_s": 30},
        }
    )
    daemon = Daemon(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await daemon.started.wait()
    started = time.perf_counter()
    while daemon.forwarder.delivered < n:
        daemon.forwarder.progress.clear()
        await asyncio.wait_for(daemon.forwarder.progress.wait(), 60)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return elapsed


def bare_publish(broker_port: int, n: int, batch: int) -> float:
    """The same request bytes at QoS 1, as fast as paho sends them; no SQLite, no replies."""
    base = int(time.time() * 1000)
    rows = [
        QueuedSample(
            i, "benchPK", s.device_key, s.ts_ms, json.dumps(s.points, separators=(",", ":"))
        )
        for i, s in ((i, sample(i, base)) for i in range(batch))
    ]
    payload = batch_request("1", METHOD_RESUME_BATCH, [batch_element(r) for r in rows])
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    client.max_inflight_messages_set(100)
    done = threading.Event()
    acked = 0
    requests = n // batch

    def on_publish(*_: Any) -> None:
        nonlocal acked
        acked += 1
        if acked == requests:
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    started = time.perf_counter()
    for _ in range(requests):
        client.publish("/sys/gwPK/gw/thing/measurepoint/resume/batch", payload, qos=1)
    done.wait(300)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--batches", default="100,500")
    parser.add_argument("--inflight", default="1,4,8")
    args = parser.parse_args()
    n = args.samples
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(Path(tmp))
        broker.start()
        hub = HubSimulator("127.0.0.1", broker.port, require_login=False)
        hub.start()
        try:
            for batch in (int(b) for b in args.batches.split(",")):
                bare = bare_publish(broker.port, n, batch)
                for inflight in (int(i) for i in args.inflight.split(",")):
                    path = Path(tmp) / f"q-{batch}-{inflight}.db"
                    await prefill(path, n)
                    hub.deliveries.clear()
                    seconds = await drain(broker.port, path, n, batch, inflight)
                    results.append(
                        {
                            "samples": n,
                            "points": n * POINTS,
                            "batch": batch,
                            "inflight": inflight,
                            "seconds": round(seconds, 2),
                            "points_per_s": round(n * POINTS / seconds),
                            "bare_points_per_s": round(n * POINTS / bare),
                            "ratio": round(bare / seconds, 3),
                        }
                    )
                    print_row(results[-1])
        finally:
            hub.stop()
            broker.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(),
        "cpus": __import__("os").cpu_count(),
        "python": platform.python_version(),
    }
    (out / "drain.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))


def print_row(row: dict[str, Any]) -> None:
    if not getattr(print_row, "header", False):
        print(
            f"{'samples':>8} {'batch':>6} {'inflight':>8} {'seconds':>8} {'points/s':>10}"
            f" {'bare points/s':>14} {'ratio':>6}"
        )
        print_row.header = True  # type: ignore[attr-defined]
    print(
        f"{row['samples']:>8} {row['batch']:>6} {row['inflight']:>8} {row['seconds']:>8}"
        f" {row['points_per_s']:>10} {row['bare_points_per_s']:>14} {row['ratio']:>6}"
    )


if __name__ == "__main__":
    asyncio.run(main())
