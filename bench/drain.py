"""Drain: how fast a backlog leaves the queue, next to a bare paho loop moving the same bytes.

    python bench/drain.py [--samples 1000000] [--batches 100,500,1000] [--inflight 1,4,8]
                          [--repeat 3]

A queue pre-filled with samples of 10 points from 100 sub-devices (an hour old, so all go as
resume.batch), mosquitto on loopback, the hub simulator in its own process answering 200, and
`gatewayd run` as a child draining until the hub has every sample. Points per second are
counted at the hub, from the first sample stored to the last; the daemon's CPU time over the
drain (user + system, from READY to the last sample) per million points shows its own cost,
whatever the far end's speed.

The bare loop is the practical limit of the same path without gatewayd: the very request
payloads the daemon would send, built beforehand, published by paho at QoS 1 and counted by a
plain subscriber in another process; no SQLite, no replies, no waiting. The ratio is
drain / bare at the same batch size. That loop moves bytes only; a hub has to read what it is
sent, so a second reference publishes the same payloads the same way to the hub simulator
(which parses, stores and answers; the loop ignores the answers): "bare to hub". Medians of
--repeat runs; JSON in bench/results/drain.json.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from common import (
    POINTS,
    Daemon,
    FarEnd,
    broker,
    copy_queue,
    daemon_sections,
    machine,
    median,
    print_table,
    sample,
    template,
    workdir,
    write_config,
    write_json,
)
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.enos.protocol import METHOD_RESUME_BATCH, batch_request
from gatewayd.forward.batches import pack_batch
from gatewayd.model import QueuedSample

TOPIC = "/sys/gwPK/gw/thing/measurepoint/resume/batch"


def drain_once(
    folder: Path, port: int, template: Path, n: int, batch: int, inflight: int
) -> tuple[float, float]:
    """Points per second at the hub, and the daemon's CPU seconds per million points."""
    copy_queue(template, folder / "queue.db")
    config = write_config(
        folder / "config.toml",
        daemon_sections(folder, port, batch_max_samples=batch, inflight=inflight),
    )
    far = FarEnd(port, n)
    daemon = Daemon(config, folder)
    try:
        daemon.start()
        cpu_at_ready = daemon.cpu_s()
        seen = far.result()
        cpu = daemon.cpu_s() - cpu_at_ready
    finally:
        daemon.stop()
        far.stop()
    return n * POINTS / (seen["last"] - seen["first"]), cpu / (n * POINTS / 1e6)


def request_payloads(n: int, batch: int) -> list[bytes]:
    base = int(time.time() * 1000) - 3_600_000
    payloads = []
    for start in range(0, n, batch):
        rows = []
        for i in range(start, min(n, start + batch)):
            s = sample(i, base)
            points = json.dumps(s.points, separators=(",", ":"))
            rows.append(QueuedSample(i + 1, s.product_key, s.device_key, s.ts_ms, points))
        _, elements = pack_batch(rows, 1 << 30)
        payloads.append(batch_request(str(start), METHOD_RESUME_BATCH, elements))
    return payloads


def bare_once(port: int, payloads: list[bytes], n: int, to_hub: bool = False) -> float:
    far = FarEnd(port, n, bare=False) if to_hub else FarEnd(port, len(payloads), bare=True)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    client.max_inflight_messages_set(64)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(10)
    try:
        started = time.time()
        for payload in payloads:
            client.publish(TOPIC, payload, qos=1)
        seen = far.result()
    finally:
        client.disconnect()
        client.loop_stop()
        far.stop()
    return n * POINTS / (seen["last"] - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--batches", default="100,500,1000")
    parser.add_argument("--inflight", default="1,4,8")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.samples
    rows: list[dict[str, Any]] = []
    with workdir() as folder, broker(folder) as mqtt_broker:
        queue_template = template(n)
        for batch in (int(b) for b in args.batches.split(",")):
            payloads = request_payloads(n, batch)
            bare = median([bare_once(mqtt_broker.port, payloads, n) for _ in range(args.repeat)])
            to_hub = median(
                [bare_once(mqtt_broker.port, payloads, n, True) for _ in range(args.repeat)]
            )
            for inflight in (int(i) for i in args.inflight.split(",")):
                measured = [
                    drain_once(folder, mqtt_broker.port, queue_template, n, batch, inflight)
                    for _ in range(args.repeat)
                ]
                runs = [rate for rate, _ in measured]
                rows.append(
                    {
                        "samples": n,
                        "batch": batch,
                        "inflight": inflight,
                        "points_per_s": round(median(runs)),
                        "runs": [round(r) for r in runs],
                        "cpu_s_per_m_points": round(median([c for _, c in measured]), 2),
                        "bare_points_per_s": round(bare),
                        "ratio": round(median(runs) / bare, 3),
                        "bare_to_hub_points_per_s": round(to_hub),
                        "ratio_to_hub": round(median(runs) / to_hub, 3),
                    }
                )
                print(
                    f"batch {batch} x {inflight}: {rows[-1]['points_per_s']:,} points/s",
                    flush=True,
                )
    print_table(
        f"drain, {n:,} samples x {POINTS} points, median of {args.repeat}",
        rows,
        [
            ("batch", "batch"),
            ("inflight", "in flight"),
            ("points_per_s", "points/s"),
            ("cpu_s_per_m_points", "daemon CPU s per M points"),
            ("bare_points_per_s", "bare paho points/s"),
            ("ratio", "ratio"),
            ("bare_to_hub_points_per_s", "bare to hub points/s"),
            ("ratio_to_hub", "ratio"),
        ],
    )
    print(f"JSON: {write_json('drain', machine(), rows)}")


if __name__ == "__main__":
    main()
