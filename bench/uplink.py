"""Drain over a field uplink: a backlog and live meters through the link emulator.

    python bench/uplink.py [--links 10M,1M,256k] [--scale 1.0] [--after-s 20] [--max-s 300]

mosquitto on loopback; the hub simulator (bench/hub.py, recording every sample it stores and
when) on the broker directly; `gatewayd run` reaches the broker only through
gatewayd/sim/link.py at the link's rate and round trip. The queue holds a backlog of 100
sub-devices x 10 float32 points (values as a float32 meter gives them), an hour old; 10 live
meters (bench/modbus_farm.py, 10 float32 points each) are polled every 1 s throughout. The
daemon runs with the default [forward] settings.

Reported per link: drain time (READY to the last backlog sample stored; or the share stored
when --max-s ran out), link use over the drain (all bytes the link carried upstream, and
new data only: the same bytes times the share of stored samples that were not duplicates),
live latency (stored minus taken) p50/p99 during the drain and for --after-s after it (and
during the drain for readings taken once the session was up: before it, ~5 round trips after
READY, readings wait for the connection, the subscription and the sub-devices' logins),
duplicate samples, request timeouts (gatewayd_replies_total{code="timeout"}), bytes per point
(upstream link bytes over points stored; and after the drain, live meters alone), the daemon's CPU (user + system over wall), and how
far the drain-rate metric and the ETA metric (`gatewayd_drain_eta_seconds`: pending over how
fast the queue shrank, as the `drain_progress` line computes it) were from the truth between
25 % and 90 % of the drain.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import (
    Daemon,
    FarEnd,
    LinkProcess,
    broker,
    daemon_sections,
    machine,
    modbus_farm,
    print_table,
    workdir,
    write_config,
    write_json,
)

from gatewayd.acquire.decode import shortest_float32
from gatewayd.model import Sample
from gatewayd.queue.store import open_store
from gatewayd.sim.broker import free_port

#: name: (bit/s, RTT ms, backlog samples at --scale 1)
LINKS = {
    "10M": (10_000_000, 60, 120_000),
    "1M": (1_000_000, 300, 20_000),
    "256k": (256_000, 600, 5_000),
}
BACKLOG_DEVICES = 100
#: How old the backlog's newest sample is: an hour (an outage) by default; `--backlog-age-s 1`
#: is an outage shorter than live_max_age_s, after which every queued row is young.
BACKLOG_AGE_MS = 3_600_000
LIVE_DEVICES = 10
POINTS = 10


def float32(value: float) -> float:
    return shortest_float32(struct.unpack("f", struct.pack("f", value))[0])


def backlog(path: Path, n: int) -> None:
    """n samples of 100 meters, 1 s apart per meter, ending BACKLOG_AGE_MS ago."""
    store = open_store(path, "off", 0)
    end = int(time.time() * 1000) - BACKLOG_AGE_MS
    per_device = math.ceil(n / BACKLOG_DEVICES)
    try:
        batch = []
        for i in range(n):
            device, step = i % BACKLOG_DEVICES, i // BACKLOG_DEVICES
            ts = end - (per_device - step) * 1000
            points = {
                f"P{k}": float32(230.0 + 5 * math.sin(i / 977 + k) + 0.013 * (i % 89))
                for k in range(POINTS)
            }
            batch.append(Sample("benchPK", f"bk{device:03d}", ts, points))
            if len(batch) == 10_000:
                store.insert(batch)
                batch = []
        if batch:
            store.insert(batch)
    finally:
        store.conn.close()


def live_devices_toml(ports: list[int]) -> str:
    points = "".join(
        f'[[devices.points]]\nid = "P{k}"\ntable = "holding"\naddress = {2 * k}\ntype = "float32"\n'
        for k in range(POINTS)
    )
    return "\n".join(
        f'[[devices]]\nname = "live{n:02d}"\nproduct_key = "benchPK"\ndevice_key = "live{n:02d}"\n'
        f'device_secret = "s{n}"\ninterval_s = 1.0\n'
        f'[devices.modbus]\ntransport = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
        "unit_id = 1\ntimeout_s = 0.5\nretries = 0\n" + points
        for n, port in enumerate(ports)
    )


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_link(
    name: str, scale: float, after_s: float, max_s: float, forward: dict[str, Any]
) -> dict[str, Any]:
    rate, rtt, size = LINKS[name]
    n = int(size * scale)
    with modbus_farm(LIVE_DEVICES) as ports, workdir() as folder, broker(folder) as mqtt_broker:
        backlog(folder / "queue.db", n)
        record = folder / "deliveries.jsonl"
        link = LinkProcess(mqtt_broker.port, rate, rtt)
        metrics_port = free_port()
        sections = daemon_sections(folder, link.port, reply_timeout_s=15.0, **forward)
        sections["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
        config = write_config(folder / "config.toml", sections, live_devices_toml(ports))
        far = FarEnd(mqtt_broker.port, 10**12, record=record)
        daemon = Daemon(config, folder)
        try:
            daemon.start()
            t_ready, cpu0 = time.time(), daemon.cpu_s()
            drained_at = None
            seen_backlog = False  # the first health tick has not run at READY
            series: list[tuple[float, float, float, float]] = []  # when, pending, rate, ETA
            while time.time() - t_ready < max_s:
                time.sleep(0.5)
                figures = scrape(metrics_port)
                pending = figures.get("gatewayd_queue_samples", 0)
                rate_metric = figures.get("gatewayd_drain_rate_samples_per_second", 0.0)
                eta = figures.get("gatewayd_drain_eta_seconds", math.inf)
                series.append((time.time(), pending, rate_metric, eta))
                seen_backlog = seen_backlog or pending > 2 * LIVE_DEVICES
                if seen_backlog and pending <= 2 * LIVE_DEVICES:
                    drained_at = time.time()
                    break
            time.sleep(after_s if drained_at else 0)
            t_end, cpu1 = time.time(), daemon.cpu_s()
            values = scrape(metrics_port)
        finally:
            daemon.stop()
            far.stop()
            link.stop()
        rows = [json.loads(line) for line in record.read_text().splitlines()]
    seen: set[tuple[str, int]] = set()
    duplicates = 0
    backlog_done = 0.0
    stored_backlog = 0
    firsts = []  # (received, device, ts) of each sample the first time it was stored
    for device, ts, received in sorted(rows, key=lambda r: r[2]):
        if (device, ts) in seen:
            duplicates += 1
            continue
        seen.add((device, ts))
        firsts.append((received, device, ts))
        if device.startswith("bk"):
            stored_backlog += 1
            backlog_done = received
    drain_end = backlog_done if stored_backlog >= n else t_end
    during = [
        r - ts / 1000 for r, d, ts in firsts if d.startswith("live") and ts / 1000 < drain_end
    ]
    # The session is up (connected, subscribed, sub-devices added and logged in: ~5 round trips
    # after READY) no later than half a round trip before the first sample reached the hub.
    # Readings taken before that waited for the session, not behind the backlog.
    session_up = (min(f[0] for f in firsts) if firsts else t_end) - rtt / 2000
    during_up = [
        r - ts / 1000
        for r, d, ts in firsts
        if d.startswith("live") and session_up <= ts / 1000 < drain_end
    ]
    after = [
        r - ts / 1000 for r, d, ts in firsts if d.startswith("live") and ts / 1000 > drain_end + 1
    ]
    in_drain = [f for f in firsts if f[0] <= drain_end]
    all_in_drain = sum(1 for r in rows if r[2] <= drain_end)
    up = link.up_bytes_between(t_ready, drain_end)
    capacity = rate / 8 * (drain_end - t_ready)
    use = up / capacity if capacity else 0.0
    total_up = link.up_bytes_between(t_ready, t_end)
    # Live traffic alone: what the link carried after the drain, over the points it brought.
    quiet_from = drain_end + 2
    quiet_points = POINTS * sum(1 for r, d, _ in firsts if r > quiet_from and d.startswith("live"))
    quiet_up = link.up_bytes_between(quiet_from, t_end)
    eta_ratios, rate_ratios = [], []
    true_rate = (stored_backlog + LIVE_DEVICES * (drain_end - t_ready)) / (drain_end - t_ready)
    for when, _pending, rate_metric, eta in series:
        share = (when - t_ready) / (drain_end - t_ready)
        if 0.25 <= share <= 0.9 and rate_metric > LIVE_DEVICES:
            eta_ratios.append(eta / (drain_end - when))
            rate_ratios.append(rate_metric / true_rate)
    return {
        "link": name,
        "eta_ratio_min": round(min(eta_ratios), 2) if eta_ratios else float("nan"),
        "eta_ratio_max": round(max(eta_ratios), 2) if eta_ratios else float("nan"),
        "rate_ratio_min": round(min(rate_ratios), 2) if rate_ratios else float("nan"),
        "rate_ratio_max": round(max(rate_ratios), 2) if rate_ratios else float("nan"),
        "backlog": n,
        "drained": stored_backlog >= n,
        "backlog_stored": stored_backlog,
        "drain_s": round(drain_end - t_ready, 1),
        "link_use": round(use, 3),
        "link_use_new": round(use * len(in_drain) / all_in_drain, 3) if all_in_drain else 0.0,
        "live_p50_during_s": round(pct(during, 0.5), 2),
        "live_p99_during_s": round(pct(during, 0.99), 2),
        "session_up_s": round(session_up - t_ready, 2),
        "live_p50_during_up_s": round(pct(during_up, 0.5), 2),
        "live_p99_during_up_s": round(pct(during_up, 0.99), 2),
        "live_p50_after_s": round(pct(after, 0.5), 2),
        "live_p99_after_s": round(pct(after, 0.99), 2),
        "duplicates": duplicates,
        "timeouts": int(values.get('gatewayd_replies_total{code="timeout"}', 0)),
        "bytes_per_point": round(total_up / (len(rows) * POINTS), 1) if rows else 0.0,
        "bytes_per_point_after": round(quiet_up / quiet_points, 1) if quiet_points else 0.0,
        "cpu_percent": round(100 * (cpu1 - cpu0) / (t_end - t_ready), 1),
        "load_1m": round(os.getloadavg()[0], 2),
    }


COLUMNS = [
    ("link", "link"),
    ("backlog", "backlog"),
    ("drain_s", "drain s"),
    ("backlog_stored", "stored"),
    ("link_use", "use all"),
    ("link_use_new", "use new"),
    ("live_p50_during_s", "live p50 drain"),
    ("live_p99_during_s", "p99 drain"),
    ("session_up_s", "session up s"),
    ("live_p99_during_up_s", "p99 drain, up"),
    ("live_p50_after_s", "p50 after"),
    ("live_p99_after_s", "p99 after"),
    ("duplicates", "dups"),
    ("timeouts", "timeouts"),
    ("bytes_per_point", "B/point"),
    ("bytes_per_point_after", "B/pt after"),
    ("cpu_percent", "CPU %"),
    ("load_1m", "load"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--links", default="10M,1M,256k")
    parser.add_argument("--scale", type=float, default=1.0, help="backlog size factor")
    parser.add_argument("--after-s", type=float, default=20.0)
    parser.add_argument("--max-s", type=float, default=300.0)
    parser.add_argument("--name", default="uplink", help="JSON file name in bench/results")
    parser.add_argument("--forward", default="{}", help="JSON of [forward] overrides")
    parser.add_argument("--backlog-age-s", type=float, default=3600.0, help="age of its newest")
    args = parser.parse_args()
    global BACKLOG_AGE_MS
    BACKLOG_AGE_MS = int(args.backlog_age_s * 1000)
    rows = []
    for name in args.links.split(","):
        rows.append(run_link(name, args.scale, args.after_s, args.max_s, json.loads(args.forward)))
        print(json.dumps(rows[-1]), flush=True)
    print_table("uplink drain with 10 live meters", rows, COLUMNS)
    write_json(args.name, {**machine(), "scale": args.scale}, rows)


if __name__ == "__main__":
    main()
