"""Ingest: samples committed per second with synchronous = "full" and group commit.

    python bench/ingest.py [--seconds 10] [--intervals 50,200,1000] [--repeat 3]

A producer hands the queue samples of 10 points as fast as the event loop lets it (the way
pollers do, `put` and move on), while the queue's own committer writes a group every
`commit_interval_ms` (or at once at 2,000 buffered samples). Each run is a child process under
`strace -c -e fsync,fdatasync`, so the fsyncs per second are counted, not inferred; where
strace is missing, that column is empty. The producer outruns the disk on purpose: groups grow
while a commit is under way (that is what group commit is for), so this is the most the queue
can take. A second set of rows offers a steady 10,000 samples/s (the 100 k points/s target),
where there is about one fsync per commit interval. Medians of --repeat runs; bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    POINTS,
    machine,
    median,
    print_table,
    sample,
    workdir,
    write_json,
)

from gatewayd.config import QueueConfig
from gatewayd.queue.store import SampleQueue, read_stats


async def produce(path: Path, seconds: float, interval_ms: int, rate: int) -> dict[str, Any]:
    """Put samples for `seconds`: as fast as possible (rate 0) or `rate` samples/s, paced."""
    queue = SampleQueue(
        QueueConfig(
            path=path, synchronous="full", commit_interval_ms=interval_ms, max_bytes=1 << 34
        )
    )
    await queue.open()
    committer = asyncio.create_task(queue.run_committer())
    base = int(time.time() * 1000)
    i = 0
    started = time.perf_counter()
    deadline = started + seconds
    while (now := time.perf_counter()) < deadline:
        if rate:
            due = int((now - started) * rate) - i  # paced: what the schedule owes by now
            for _ in range(max(0, due)):
                queue.put(sample(i, base))
                i += 1
            await asyncio.sleep(0.005)
            continue
        for _ in range(200):
            queue.put(sample(i, base))
            i += 1
        await asyncio.sleep(0)  # pollers yield between reads; so does this producer
    await queue.flush()
    elapsed = time.perf_counter() - started
    committer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await committer
    await queue.close()
    committed = read_stats(path).pending_samples
    return {"samples": committed, "seconds": elapsed}


def fsyncs(strace_summary: str) -> int:
    """Calls of fsync and fdatasync in an `strace -c` summary."""
    total = 0
    for line in strace_summary.splitlines():
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)$", line)
        if match:
            total += int(match.group(1))
    return total


def run_child(folder: Path, seconds: float, interval_ms: int, rate: int) -> dict[str, Any]:
    path = folder / f"ingest-{interval_ms}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    args = [sys.executable, __file__, "--child", str(path), str(seconds), str(interval_ms)]
    args += [str(rate)]
    summary = folder / "strace.txt"
    if shutil.which("strace"):
        # --seccomp-bpf: only the traced calls stop the process. Plain ptrace stops it at every
        # system call, which slowed this benchmark to half its speed (14 k vs 26 k samples/s).
        trace = ["strace", "-f", "--seccomp-bpf", "-c", "-e", "trace=fsync,fdatasync"]
        args = [*trace, "-o", str(summary), *args]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["fsyncs"] = fsyncs(summary.read_text()) if summary.exists() else None
    summary.unlink(missing_ok=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--intervals", default="50,200,1000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--rates",
        default="0,10000",
        help="offered samples/s per row; 0 = as fast as possible (10,000 = the 100 k points/s target)",
    )
    parser.add_argument("--child", nargs=4, metavar=("PATH", "SECONDS", "INTERVAL_MS", "RATE"))
    args = parser.parse_args()
    if args.child:
        path, seconds, interval, rate = args.child
        result = asyncio.run(produce(Path(path), float(seconds), int(interval), int(rate)))
        print(json.dumps(result))
        return
    rows = []
    with workdir() as folder:
        combos = [
            (int(r), int(i)) for r in args.rates.split(",") for i in args.intervals.split(",")
        ]
        for rate, interval in combos:
            runs = [run_child(folder, args.seconds, interval, rate) for _ in range(args.repeat)]
            rates = [r["samples"] * POINTS / r["seconds"] for r in runs]
            syncs = [r["fsyncs"] / r["seconds"] for r in runs if r["fsyncs"] is not None]
            rows.append(
                {
                    "offered": f"{rate:,} samples/s" if rate else "as fast as possible",
                    "commit_interval_ms": interval,
                    "points_per_s": round(median(rates)),
                    "samples_per_s": round(median(rates) / POINTS),
                    "fsyncs_per_s": round(median(syncs), 1) if syncs else None,
                    "samples_per_fsync": round(median(rates) / POINTS / median(syncs))
                    if syncs
                    else None,
                    "runs_points_per_s": [round(r) for r in rates],
                }
            )
            print(
                f"{rows[-1]['offered']}, commit every {interval} ms: "
                f"{rows[-1]['points_per_s']:,} points/s",
                flush=True,
            )
    print_table(
        f'ingest, synchronous = "full", {args.seconds:.0f} s runs, median of {args.repeat}',
        rows,
        [
            ("offered", "offered"),
            ("commit_interval_ms", "commit every ms"),
            ("samples_per_s", "samples/s"),
            ("points_per_s", "points/s"),
            ("fsyncs_per_s", "fsyncs/s"),
            ("samples_per_fsync", "samples/fsync"),
        ],
    )
    print(f"JSON: {write_json('ingest', machine(), rows)}")


if __name__ == "__main__":
    main()
