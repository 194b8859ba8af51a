"""Self-check of the link emulator (gatewayd/sim/link.py) against a bare paho publisher.

    python bench/link_check.py [--seconds 20]

For each of the three field links: the round trip of a small QoS 1 publish (to its PUBACK)
when the link is idle, and the goodput of a paho client publishing 64 KB payloads at QoS 1 as
fast as paho will (no window of ours), counted by a subscriber on loopback. Goodput counts
MQTT payload bytes only, so it reads a little under the set rate (headers, PUBACKs upstream).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from common import LinkProcess, broker, machine, print_table, workdir, write_json
from paho.mqtt.enums import CallbackAPIVersion

LINKS = [(10_000_000, 60), (1_000_000, 300), (256_000, 600)]


def check(broker_port: int, rate_bps: int, rtt_ms: int, seconds: float) -> dict[str, Any]:
    link = LinkProcess(broker_port, rate_bps, rtt_ms, stats_every_s=None)
    port = link.port
    received = {"bytes": 0, "first": 0.0, "last": 0.0}
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="check-sub")

    def on_message(c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if not received["first"]:
            received["first"] = now
        else:
            received["bytes"] += len(m.payload)  # bytes that arrived after the first message
        received["last"] = now

    subscribed = threading.Event()
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.connect("127.0.0.1", broker_port)
    sub.subscribe("check/bulk", qos=1)
    sub.loop_start()
    subscribed.wait(10)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="check-pub")
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    acked: dict[int, threading.Event] = {}
    pub.on_publish = lambda c, u, mid, rc, p: acked.setdefault(mid, threading.Event()).set()
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(1.0)
    rtts = []
    for _ in range(5):
        started = time.monotonic()
        info = pub.publish("check/ping", b"x", qos=1)
        info.wait_for_publish(10)
        rtts.append(time.monotonic() - started)
    payload = b"v" * 65536
    count = max(4, int(rate_bps / 8 * seconds / len(payload)))
    for _ in range(count):
        pub.publish("check/bulk", payload, qos=1)
    deadline = time.monotonic() + seconds * 3 + 10
    while received["bytes"] < (count - 1) * len(payload) and time.monotonic() < deadline:
        time.sleep(0.05)
    pub.disconnect()
    pub.loop_stop()
    sub.disconnect()
    sub.loop_stop()
    stats = link.stop()
    goodput_bps = received["bytes"] * 8 / (received["last"] - received["first"])
    return {
        "rate_bps": rate_bps,
        "rtt_ms": rtt_ms,
        "measured_rtt_ms": round(statistics.median(rtts) * 1000, 1),
        "goodput_bps": round(goodput_bps),
        "goodput_ratio": round(goodput_bps / rate_bps, 3),
        "link_up_bytes": stats["up_bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    rows = []
    with workdir() as folder, broker(folder) as b:
        for rate, rtt in LINKS:
            rows.append(check(b.port, rate, rtt, args.seconds))
            print(rows[-1], flush=True)
    print_table(
        "link emulator vs bare paho",
        rows,
        [
            ("rate_bps", "set bit/s"),
            ("rtt_ms", "set RTT ms"),
            ("goodput_bps", "goodput bit/s"),
            ("goodput_ratio", "ratio"),
            ("measured_rtt_ms", "RTT ms"),
        ],
    )
    write_json("link_check", machine(), rows)


if __name__ == "__main__":
    main()
