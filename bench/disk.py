"""Disk: bytes on disk per point at 10 points per sample, and startup time with a big backlog.

    python bench/disk.py [--sizes 100000,1000000,10000000] [--repeat 3]

Bytes per point is the queue file (plus any -wal) over the points it holds, for queues filled
through the daemon's own insert path. Startup: `gatewayd run` with the largest queue and one
Modbus device (the uplink unreachable, so nothing drains): the time from exec to READY (sent
once polling runs) and to the first poll's reading (its time stamp, taken when the read
completed). A full-table scan at start would show here: 10 M rows take seconds to walk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    POINTS,
    ROOT,
    Daemon,
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

from gatewayd.sim.broker import free_port


def on_disk(path: Path) -> int:
    return sum(
        Path(f"{path}{suffix}").stat().st_size
        for suffix in ("", "-wal")
        if Path(f"{path}{suffix}").exists()
    )


def first_new_sample(db: Path, after_id: int, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    uri = f"{db.absolute().as_uri()}?mode=ro"
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            row = conn.execute(
                "SELECT ts_ms FROM samples WHERE id > ? ORDER BY id LIMIT 1", (after_id,)
            ).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.01)  # the daemon is another process; its queue file is the only window
    raise TimeoutError("no poll reached the queue")


def startup_once(folder: Path, n: int, modbus_port: int) -> dict[str, float]:
    db = copy_queue(template(n), folder / "queue.db")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        last_id = int(conn.execute("SELECT max(id) FROM samples").fetchone()[0])
    device = (
        '[[devices]]\nname = "d0"\nproduct_key = "benchPK"\ndevice_key = "d0"\n'
        'device_secret = "s"\ninterval_s = 1.0\n[devices.modbus]\ntransport = "tcp"\n'
        f'host = "127.0.0.1"\nport = {modbus_port}\nunit_id = 1\n'
        '[[devices.points]]\nid = "R0"\ntable = "holding"\naddress = 0\ntype = "uint16"\n'
    )
    config = write_config(
        folder / "config.toml", daemon_sections(folder, free_port()), device
    )  # nothing listens on that MQTT port: the backlog stays
    daemon = Daemon(config, folder)
    exec_wall = time.time()
    try:
        daemon.start()
        first_ms = first_new_sample(db, last_id)
    finally:
        daemon.stop()
    return {
        "ready_s": daemon.ready_s - daemon.started_s,
        "first_poll_s": first_ms / 1000 - exec_wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    for n in sizes:
        size = on_disk(template(n))
        rows.append(
            {
                "samples": n,
                "points": n * POINTS,
                "file_mb": round(size / 2**20, 1),
                "bytes_per_point": round(size / (n * POINTS), 1),
            }
        )
    farm = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "modbus_farm.py"), "--devices", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert farm.stdin is not None and farm.stdout is not None
    try:
        port = json.loads(farm.stdout.readline())[0]
        with workdir() as folder:
            for row in rows:
                runs = [startup_once(folder, row["samples"], port) for _ in range(args.repeat)]
                row["ready_s"] = round(median([r["ready_s"] for r in runs]), 2)
                row["first_poll_s"] = round(median([r["first_poll_s"] for r in runs]), 2)
                print(f"{row['samples']:,}: first poll after {row['first_poll_s']} s", flush=True)
    finally:
        farm.stdin.close()
        farm.wait(30)
    print_table(
        f"disk per point (10 points per sample) and startup, median of {args.repeat}",
        rows,
        [
            ("samples", "queued samples"),
            ("file_mb", "file MB"),
            ("bytes_per_point", "bytes/point"),
            ("ready_s", "exec to READY s"),
            ("first_poll_s", "exec to first poll s"),
        ],
    )
    print(f"JSON: {write_json('disk', machine(), rows)}")


if __name__ == "__main__":
    main()
