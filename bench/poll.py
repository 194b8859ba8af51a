"""Poll capacity: 200 Modbus TCP devices x 50 registers every second, for a minute.

    python bench/poll.py [--devices 200] [--registers 50] [--seconds 60] [--repeat 3]
                         [--cpu-quota 25] [--keep-queue]

Each device is its own pymodbus server on loopback (all in one helper process), the daemon runs
as `gatewayd run` with mosquitto and the hub simulator behind it, so its CPU includes
forwarding what it polls. The hub records every sample's time stamp (taken when the read
completed). Per device, the schedule is the interval trigger's ticks; a tick with no sample is
a missed poll, and a sample's jitter is how far after its tick it was stamped, measured from
the device's earliest-stamped tick (so jitter includes the read itself). CPU is the daemon's
user + system time over the measured window. Medians of --repeat runs; bench/results/poll.json.
With --cpu-quota P (root, cgroup v1) the daemon runs in a child of /sys/fs/cgroup/cpu with
cfs_quota_us = P% of cfs_period_us = 100 ms, from before it execs (so READY is under the quota
too); the group is removed after. READY is exec to READY=1. Each run starts on a new queue
file unless --keep-queue: then runs after the first are restarts on the file the one before
left (as after a reboot; a new file costs its schema migrations too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import (
    Daemon,
    FarEnd,
    broker,
    cpu_quota,
    daemon_sections,
    machine,
    median,
    modbus_farm,
    print_table,
    workdir,
    write_config,
    write_json,
)

WARMUP_S = 5.0


def devices_toml(ports: list[int], registers: int, interval_s: float) -> str:
    points = "".join(
        f'[[devices.points]]\nid = "R{a}"\ntable = "holding"\naddress = {a}\ntype = "uint16"\n'
        for a in range(registers)
    )
    blocks = []
    for n, port in enumerate(ports):
        blocks.append(
            f'[[devices]]\nname = "d{n:03d}"\nproduct_key = "benchPK"\ndevice_key = "d{n:03d}"\n'
            f'device_secret = "s{n}"\ninterval_s = {interval_s}\n'
            f'[devices.modbus]\ntransport = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
            f"unit_id = 1\ntimeout_s = 0.5\nretries = 0\n" + points
        )
    return "\n".join(blocks)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def analyse(
    samples: list[tuple[str, int]], window: tuple[float, float], interval_ms: int
) -> dict[str, Any]:
    by_device: dict[str, list[int]] = defaultdict(list)
    for device, ts in samples:
        by_device[device].append(ts)
    start_ms, end_ms = (int(t * 1000) for t in window)
    jitters: list[float] = []
    scheduled = done = 0
    for stamps in by_device.values():
        stamps.sort()
        first = stamps[0]
        base = min(ts - round((ts - first) / interval_ms) * interval_ms for ts in stamps)
        ticks = {
            k
            for k in range((start_ms - base) // interval_ms, (end_ms - base) // interval_ms + 1)
            if start_ms <= base + k * interval_ms < end_ms
        }
        scheduled += len(ticks)
        hit = set()
        for ts in stamps:
            k = round((ts - base) / interval_ms)
            if k in ticks and k not in hit:
                hit.add(k)
                jitters.append(ts - (base + k * interval_ms))
        done += len(hit)
    return {
        "scheduled": scheduled,
        "done": done,
        "missed": scheduled - done,
        "jitter_p50_ms": percentile(jitters, 0.50),
        "jitter_p99_ms": percentile(jitters, 0.99),
        "jitter_max_ms": max(jitters),
    }


def run_once(
    folder: Path,
    devices: int,
    registers: int,
    seconds: float,
    cgroup: Path | None = None,
    keep_queue: bool = False,
) -> dict[str, Any]:
    record = folder / "deliveries.jsonl"
    record.unlink(missing_ok=True)
    for leftover in ("queue.db", "queue.db-wal", "queue.db-shm"):
        # A previous run's undelivered samples would reach this run's hub and skew its phases
        # (a few at most after a graceful stop, when the queue is kept on purpose).
        if not keep_queue:
            (folder / leftover).unlink(missing_ok=True)
    with modbus_farm(devices) as ports, broker(folder) as mqtt_broker:
        sections = daemon_sections(folder, mqtt_broker.port)
        config = write_config(folder / "config.toml", sections, devices_toml(ports, registers, 1.0))
        far = FarEnd(mqtt_broker.port, 10**12, record=record)
        daemon = Daemon(config, folder, cgroup)
        try:
            daemon.start()
            time.sleep(WARMUP_S)  # a benchmark's measuring window, not a wait for an event
            cpu0, t0 = daemon.cpu_s(), time.time()
            time.sleep(seconds)
            cpu1, t1 = daemon.cpu_s(), time.time()
            time.sleep(2)  # let the last window's samples reach the hub
        finally:
            daemon.stop()
            far.stop()
    samples = [(d, ts) for d, ts, _ in map(json.loads, record.read_text().splitlines())]
    result = analyse(samples, (t0, t1), 1000)
    result["cpu_percent"] = 100 * (cpu1 - cpu0) / (t1 - t0)
    result["peak_rss_mb"] = daemon.usage.peak_rss_kb / 1024
    result["ready_s"] = round(daemon.ready_s - daemon.started_s, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--registers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu-quota", type=float, help="percent of one core (cgroup v1)")
    parser.add_argument("--keep-queue", action="store_true", help="runs after the first restart")
    parser.add_argument("--name", default="poll", help="JSON file name in bench/results")
    args = parser.parse_args()
    runs = []
    with workdir() as folder, contextlib.ExitStack() as stack:
        group = stack.enter_context(cpu_quota(args.cpu_quota)) if args.cpu_quota else None
        for n in range(args.repeat):
            runs.append(
                run_once(folder, args.devices, args.registers, args.seconds, group, args.keep_queue)
            )
            r = runs[-1]
            print(
                f"run {n + 1}: {r['done']}/{r['scheduled']} polls, p99 jitter "
                f"{r['jitter_p99_ms']} ms, CPU {r['cpu_percent']:.1f} %, READY {r['ready_s']} s",
                flush=True,
            )
    keys = ["scheduled", "done", "missed", "jitter_p50_ms", "jitter_p99_ms", "jitter_max_ms"]
    row: dict[str, Any] = {
        "devices": args.devices,
        "registers": args.registers,
        **{k: median([r[k] for r in runs]) for k in keys},
        "cpu_percent": round(median([r["cpu_percent"] for r in runs]), 1),
        "peak_rss_mb": round(median([r["peak_rss_mb"] for r in runs]), 1),
        "ready_s": median([r["ready_s"] for r in runs]),
        "cpu_quota_percent": args.cpu_quota or 0,
        "load_1m": round(os.getloadavg()[0], 2),
        "runs": runs,
    }
    print_table(
        f"poll, {args.devices} devices x {args.registers} registers every 1 s, "
        f"{args.seconds:.0f} s, median of {args.repeat}",
        [row],
        [
            ("devices", "devices"),
            ("scheduled", "scheduled"),
            ("done", "done"),
            ("missed", "missed"),
            ("jitter_p50_ms", "jitter p50 ms"),
            ("jitter_p99_ms", "jitter p99 ms"),
            ("jitter_max_ms", "max ms"),
            ("cpu_percent", "CPU % of a core"),
            ("peak_rss_mb", "peak RSS MB"),
            ("ready_s", "READY s"),
            ("cpu_quota_percent", "quota %"),
            ("load_1m", "load"),
        ],
    )
    print(f"JSON: {write_json(args.name, machine(), [row])}")


if __name__ == "__main__":
    main()
