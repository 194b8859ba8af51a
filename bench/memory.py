"""Memory: the daemon's peak RSS while it drains backlogs of 0.1 M, 1 M and 10 M samples.

    python bench/memory.py [--sizes 100000,1000000,10000000] [--repeat 1]

A store-and-forward daemon must not hold its backlog in memory: the figure has to stay flat
as the backlog grows a hundredfold. `gatewayd run` drains a pre-filled queue (10 points per
sample, 100 sub-devices) to the hub simulator (its own process) through mosquitto, with the
default batch and in-flight settings; VmHWM (peak resident set) is read from /proc, and RSS
is sampled every 0.2 s. Queues are built once in /var/tmp/gatewayd-bench-cache.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
    template,
    workdir,
    write_config,
    write_json,
)


def run_once(folder: Path, port: int, n: int) -> dict[str, Any]:
    copy_queue(template(n), folder / "queue.db")
    config = write_config(folder / "config.toml", daemon_sections(folder, port))
    far = FarEnd(port, n)
    daemon = Daemon(config, folder)
    try:
        daemon.start()
        seen = far.result()
    finally:
        daemon.stop()
        far.stop()
    rss = daemon.usage.rss_kb
    return {
        "peak_rss_mb": daemon.usage.peak_rss_kb / 1024,
        "rss_start_mb": rss[0] / 1024 if rss else 0.0,
        "rss_end_mb": rss[-1] / 1024 if rss else 0.0,
        "points_per_s": n * POINTS / (seen["last"] - seen["first"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    rows = []
    with workdir() as folder, broker(folder) as mqtt_broker:
        for n in (int(s) for s in args.sizes.split(",")):
            runs = [run_once(folder, mqtt_broker.port, n) for _ in range(args.repeat)]
            row = {"samples": n, **{k: round(median([r[k] for r in runs]), 1) for k in runs[0]}}
            rows.append(row)
            print(f"{n:,} samples: peak RSS {row['peak_rss_mb']} MB", flush=True)
    print_table(
        f"memory while draining, median of {args.repeat}",
        rows,
        [
            ("samples", "backlog samples"),
            ("peak_rss_mb", "peak RSS MB"),
            ("rss_start_mb", "RSS at start MB"),
            ("rss_end_mb", "RSS at end MB"),
            ("points_per_s", "drain points/s"),
        ],
    )
    print(f"JSON: {write_json('memory', machine(), rows)}")


if __name__ == "__main__":
    main()
