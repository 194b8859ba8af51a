"""The far end of a benchmark, in its own process so it does not share the daemon's GIL.

    python bench/hub.py --port P --expect N [--bare] [--record FILE]

Default: the hub simulator in open mode, answering 200 and counting (not keeping) samples.
`--bare`: a plain subscriber that only counts messages on the data topics, for the bare
publish loop. Prints `ready` once subscribed, then one JSON line when N samples (hub) or N
messages (bare) have arrived: when the first and the last came (wall clock, seconds).
With `--record FILE` the hub keeps what it stored and, on SIGTERM, writes one JSON line per
sample (device key, time stamp, when it arrived) to FILE before it exits.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatewayd.sim.hub import HubSimulator

DATA_TOPICS = "/sys/+/+/thing/measurepoint/+/batch"


def bare(port: int, expect: int) -> dict[str, float]:
    done = threading.Event()
    seen = {"count": 0, "bytes": 0, "first": 0.0, "last": 0.0}
    ready = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if not seen["count"]:
            seen["first"] = time.time()
        seen["count"] += 1
        seen["bytes"] += len(msg.payload)
        if seen["count"] >= expect:
            seen["last"] = time.time()
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare-sink")
    client.on_message = on_message
    client.on_subscribe = lambda *_: ready.set()
    client.connect("127.0.0.1", port)
    client.subscribe(DATA_TOPICS, qos=1)
    client.loop_start()
    ready.wait(10)
    print("ready", flush=True)
    done.wait()
    client.disconnect()
    client.loop_stop()
    return seen


def hub(port: int, expect: int, record: Path | None) -> dict[str, float]:
    simulator = HubSimulator(
        "127.0.0.1", port, require_login=False, keep_deliveries=record is not None
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    simulator.start()
    print("ready", flush=True)
    first: list[float] = []

    def progress(h: HubSimulator) -> bool:
        if not first and h.delivered_samples:
            first.append(time.time())
        return h.delivered_samples >= expect

    deadline = time.monotonic() + 900  # a benchmark that stalls fails instead of hanging
    while not simulator.wait_for(progress, 0.5) and not stopping.is_set():
        if time.monotonic() > deadline and record is None:
            break
    last = time.time()
    simulator.stop()
    if record is not None:
        with record.open("w") as out:
            for d in simulator.deliveries:
                out.write(json.dumps([d.device_key, d.ts_ms, d.received_s]) + "\n")
    return {
        "count": simulator.delivered_samples,
        "first": first[0] if first else 0.0,
        "last": last,
        "timed_out": simulator.delivered_samples < expect and not stopping.is_set(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--bare", action="store_true")
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    result = bare(args.port, args.expect) if args.bare else hub(args.port, args.expect, args.record)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
