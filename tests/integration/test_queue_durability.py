"""The queue file under pressure: bounds, age, corruption, a full disk. Real files, real SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.config import QueueConfig
from gatewayd.errors import QueueError
from gatewayd.model import Sample
from gatewayd.queue.store import SampleQueue, file_bytes, open_store, read_stats

HOURS = 4
START_MS = 1_800_000_000_000


def group(second: int, size: int = 30) -> list[Sample]:
    """`size` samples of 10 points: ten seconds of three meters."""
    return [
        Sample(
            "pk",
            f"meter{i % 3}",
            START_MS + (second + i // 3) * 1000,
            {f"P{k}": round(random.random() * 1000, 3) for k in range(10)},
        )
        for i in range(size)
    ]


def store(path: Path, **cfg: object):  # type: ignore[no-untyped-def]
    config = QueueConfig(path=path, synchronous="normal", **cfg)  # type: ignore[arg-type]
    return open_store(path, config.synchronous, config.max_bytes, config)


def test_drop_oldest_holds_the_byte_bound_through_hours_of_outage(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    bound = 1 << 20
    s = store(path, max_bytes=bound)
    largest_group = 0
    for second in range(0, HOURS * 3600, 10):
        samples = group(second)
        before = file_bytes(path)
        s.insert(samples, clock_ms=START_MS + second * 1000)
        largest_group = max(largest_group, file_bytes(path) - before, 0)
        assert file_bytes(path) <= bound + 64 * 1024, f"{file_bytes(path)} bytes at {second}s"
    s.conn.close()
    stats = read_stats(path)
    assert stats.state["evicted"] > 0
    assert stats.state["queued"] == HOURS * 360 * 30
    # The newest readings are the ones kept.
    assert stats.newest_ts_ms == START_MS + (HOURS * 3600 - 10 + 9) * 1000
    assert stats.pending_samples + stats.state["evicted"] == stats.state["queued"]


def test_drop_newest_keeps_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    s = store(path, max_bytes=1 << 20, overflow="drop_newest")
    for second in range(0, 3600, 10):
        s.insert(group(second), clock_ms=START_MS + second * 1000)
    s.conn.close()
    stats = read_stats(path)
    assert stats.state["evicted"] > 0 and stats.oldest_ts_ms == START_MS
    assert file_bytes(path) <= (1 << 20) + 64 * 1024


def test_samples_older_than_max_age_are_evicted_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd.queue")
    path = tmp_path / "q.db"
    s = store(path, max_age_s=3600)
    for second in range(0, 3 * 3600, 10):
        s.insert(group(second), clock_ms=START_MS + second * 1000)
    s.conn.close()
    stats = read_stats(path)
    assert stats.oldest_ts_ms is not None
    assert stats.oldest_ts_ms >= START_MS + (3 * 3600 - 10) * 1000 - 3600 * 1000 - 1000
    assert stats.state["evicted"] == stats.state["queued"] - stats.pending_samples > 0
    # One warning for the episode, not one per group.
    assert sum("queue_full_evicting" in r.message for r in caplog.records) == 1


def corrupt_copies(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.iterdir()
        if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))
    ]


def make_queue_with_rows(path: Path, n: int = 200) -> None:
    s = store(path)
    s.insert(group(0, n), clock_ms=START_MS)
    s.conn.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
async def test_a_corrupt_file_is_kept_aside_and_a_fresh_queue_started(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "q.db"
    make_queue_with_rows(path)
    for leftover in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{leftover}")
    if damage == "garbage":
        path.write_bytes(os.urandom(64 * 1024))
    else:
        with path.open("r+b") as handle:
            handle.truncate(path.stat().st_size // 3)
    damaged = path.read_bytes()
    queue = SampleQueue(QueueConfig(path=path))
    await queue.open()
    queue.put(group(100, 3)[0])
    await queue.close()
    kept = corrupt_copies(tmp_path)
    assert len(kept) == 1 and kept[0].read_bytes() == damaged  # nothing thrown away
    assert read_stats(path).pending_samples == 1  # and the daemon writes again
    assert any(
        "queue_corrupt" in r.message and r.levelno == logging.CRITICAL for r in caplog.records
    )


async def test_a_file_from_the_future_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    make_queue_with_rows(path, 5)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
            " VALUES ('gatewayd', '0099_future', 'x')"
        )
    queue = SampleQueue(QueueConfig(path=path))
    with pytest.raises(QueueError, match="newer gatewayd"):
        await queue.open()
    assert read_stats(path).pending_samples == 5


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_a_full_disk_keeps_the_newest_in_memory_and_recovers(tiny_disk: Path) -> None:
    queue = SampleQueue(QueueConfig(path=tiny_disk / "q.db", memory_buffer_samples=100))
    await queue.open()
    try:
        second = 0
        with pytest.raises(QueueError):
            while True:  # fill the disk
                for sample in group(second):
                    queue.put(sample)
                second += 10
                await queue.flush()
        assert queue.write_failing
        for _ in range(10):  # polls go on while the disk is full
            for sample in group(second):
                queue.put(sample)
            second += 10
            with contextlib.suppress(QueueError):
                await queue.flush()
        assert queue.buffered == 100 and queue.dropped_in_memory > 0
        newest = group(second - 10)[-1]
        remount = ["mount", "-o", "remount,size=16m", str(tiny_disk)]
        await asyncio.to_thread(subprocess.run, remount, check=True)
        assert await queue.flush() == 100  # space is back: the buffer is committed
        assert not queue.write_failing
    finally:
        await queue.close()
    stats = read_stats(tiny_disk / "q.db")
    assert stats.newest_ts_ms == newest.ts_ms
    assert stats.state["lost_disk"] == queue.dropped_in_memory
