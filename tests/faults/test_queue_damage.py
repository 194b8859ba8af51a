"""Damage in the middle of a queue file: keep polling into a fresh queue, salvage what is readable.

The file is a real queue written by gatewayd; eight pages at half its length are overwritten with
random bytes, as a flash card's failed erase block does. The start-up probe reads only both ends,
so this damage is met at run time, by the drain or by an insert's eviction.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.config import QueueConfig
from gatewayd.model import Sample
from gatewayd.queue.stats import read_stats
from gatewayd.queue.store import open_store
from gatewayd.queue.writer import SampleQueue

START_MS = 1_795_000_000_000
PAGE = 4096


def sample(n: int) -> Sample:
    return Sample("subPK", f"d{n % 5}", START_MS + n, {"P": float(n), "Q": n * 2.5})


def write_queue(path: Path, count: int) -> None:
    store = open_store(path, "normal", 1 << 30, QueueConfig(path=path))
    for start in range(0, count, 5000):
        store.insert([sample(n) for n in range(start, min(count, start + 5000))], START_MS)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.conn.close()


def samples_leaf_pages(path: Path) -> list[int]:
    """The page numbers of the `samples` table's leaves, in id order (SQLite's dbstat)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'samples' AND pagetype = 'leaf' ORDER BY path"
        ).fetchall()
    return [row[0] for row in rows]


def overwrite_pages(path: Path, pages: list[int], seed: int = 14) -> None:
    noise = random.Random(seed)
    with path.open("r+b") as handle:
        for page in pages:
            handle.seek((page - 1) * PAGE)
            handle.write(bytes(noise.getrandbits(8) for _ in range(PAGE)))


def damage_middle(path: Path, count: int = 8) -> None:
    """Overwrite `count` leaf pages of `samples` at half the queue with random bytes."""
    leaves = samples_leaf_pages(path)
    middle = len(leaves) // 2
    overwrite_pages(path, leaves[middle : middle + count])


def kept_aside(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.iterdir()
        if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))
    ]


async def drain(queue: SampleQueue) -> list[float]:
    """Fetch and acknowledge until nothing is left, as the forwarder does (cursor by id)."""
    delivered: list[float] = []
    cursor = 0
    while True:
        rows = await queue.fetch_after(cursor, 2000)
        if not rows:
            if queue.salvage_pending():
                await queue.wait_salvaged()
                continue
            return delivered
        cursor = rows[-1].id
        delivered += [json.loads(r.points_json)["P"] for r in rows]
        await queue.ack([r.id for r in rows])


async def test_mid_file_damage_met_by_the_drain_salvages_around_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd.queue")
    path = tmp_path / "queue.db"
    total = 40_000
    write_queue(path, total)
    damage_middle(path)
    # Without the background check of every page: the damage is met by the drain itself.
    queue = SampleQueue(QueueConfig(path=path, commit_interval_ms=50), check_at_start=False)
    await queue.open()  # the cheap probe (both ends) passes
    try:
        delivered = await drain(queue)
        # New readings are committed in the fresh queue and sent after the salvage.
        for n in range(total, total + 300):
            queue.put(sample(n))
        assert await queue.flush() == 300
        delivered += await drain(queue)
    finally:
        await queue.close()
    old = [p for p in delivered if p < total]
    assert len(set(old)) == len(old)  # nothing delivered twice
    new = sorted(p for p in delivered if p >= total)
    assert new == [float(n) for n in range(total, total + 300)]
    state = read_stats(path).state
    salvaged, lost = int(state["salvaged"]), int(state["lost_corrupt"])
    # Eight pages of ~70 rows each, plus the interior page above them at most: under 2 %.
    assert lost < total * 0.02, lost
    assert len(old) + lost == total  # every row delivered, or counted lost
    assert salvaged > 0
    # The books after a salvage (README, The queue file): the lost ids and the rows confirmed
    # before they were salvaged join the right-hand side.
    figures = read_stats(path)
    assert int(state["polled"]) == (
        int(state["sent"])
        + int(state["evicted"])
        + figures.pending_samples
        + lost
        + int(state.get("salvage_skipped_confirmed", 0))
    )
    assert len(kept_aside(tmp_path)) == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "queue_corrupt" in messages and "queue_salvaged" in messages


async def test_mid_file_damage_met_by_an_insert_keeps_new_readings(tmp_path: Path) -> None:
    """The age eviction inside every insert reads the head of the queue: damage there."""
    path = tmp_path / "queue.db"
    write_queue(path, 20_000)
    overwrite_pages(path, samples_leaf_pages(path)[3:7])  # past the 50 rows the probe reads
    cfg = QueueConfig(path=path, commit_interval_ms=50, memory_buffer_samples=100)
    queue = SampleQueue(cfg, check_at_start=False)
    await queue.open()
    try:
        for n in range(20_000, 20_500):
            queue.put(sample(n))
        assert await queue.flush() == 500
        assert queue.dropped_in_memory == 0
        await queue.wait_salvaged()
    finally:
        await queue.close()
    stats = read_stats(path)
    assert stats.pending_samples + int(stats.state["lost_corrupt"]) == 20_500
    assert queue.losses.samples == {"damaged": int(stats.state["lost_corrupt"])}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatewayd", *args], capture_output=True, text=True, timeout=60
    )


def test_queue_stats_and_export_read_around_the_damage(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    total = 40_000
    write_queue(path, total)
    damage_middle(path)
    stats = run_cli("queue", "stats", "--db", str(path), "--json")
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    assert total * 0.98 < figures["pending_samples"] < total
    assert figures["unreadable"]  # the id ranges it could not read
    assert "unreadable" in stats.stderr
    export = run_cli("queue", "export", "--db", str(path))
    lines = [json.loads(line) for line in export.stdout.splitlines()]
    assert len(lines) == figures["pending_samples"]
    assert lines[-1]["points"]["P"] == total - 1  # rows past the damage are read too
    assert export.returncode != 0 and "unreadable" in export.stderr


async def test_mid_file_damage_is_found_soon_after_the_start_without_a_read(tmp_path: Path) -> None:
    """The probe at open reads both ends only; a check of every page follows in the background."""
    path = tmp_path / "queue.db"
    write_queue(path, 20_000)
    damage_middle(path)
    queue = SampleQueue(QueueConfig(path=path, commit_interval_ms=50))
    await queue.open()
    try:
        await queue.wait_checked()
        await queue.wait_salvaged()
    finally:
        await queue.close()
    assert len(kept_aside(tmp_path)) == 1
    stats = read_stats(path)
    assert 0 < int(stats.state["lost_corrupt"]) < 20_000 * 0.03
    assert stats.pending_samples + int(stats.state["lost_corrupt"]) == 20_000
