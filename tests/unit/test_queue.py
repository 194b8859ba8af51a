from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gatewayd.config import QueueConfig
from gatewayd.errors import QueueError
from gatewayd.model import Sample
from gatewayd.queue.store import SampleQueue, open_store, read_stats

BASE = (int(time.time()) - 3600) * 1000  # within the default age bound


def sample(n: int, device: str = "d1") -> Sample:
    return Sample("pk", device, BASE + n, {"P": float(n), "S": f"s{n}"})


@pytest.fixture
async def queue(tmp_path: Path):  # type: ignore[no-untyped-def]
    q = SampleQueue(QueueConfig(path=tmp_path / "q.db"))
    await q.open()
    yield q
    await q.close()


async def test_samples_commit_in_groups_and_come_back_in_order(queue: SampleQueue) -> None:
    for n in range(5):
        queue.put(sample(n))
    assert await queue.fetch_after(0, 10) == []  # nothing before the group commit
    assert await queue.flush() == 5
    assert queue.new_data.is_set()
    rows = await queue.fetch_after(0, 3)
    assert [r.ts_ms for r in rows] == [BASE + n for n in range(3)]
    assert rows[0].points_json == '{"P":0.0,"S":"s0"}'
    (after, *_rest) = await queue.fetch_after(rows[-1].id, 10)
    assert after.ts_ms == BASE + 3


async def test_ack_deletes_exactly_those_rows_and_ids_are_never_reused(queue: SampleQueue) -> None:
    for n in range(4):
        queue.put(sample(n))
    await queue.flush()
    rows = await queue.fetch_after(0, 10)
    assert await queue.ack([rows[0].id, rows[2].id]) == 2
    left = await queue.fetch_after(0, 10)
    assert [r.id for r in left] == [rows[1].id, rows[3].id]
    await queue.ack([r.id for r in left])
    queue.put(sample(9))
    await queue.flush()
    (new,) = await queue.fetch_after(0, 10)
    assert new.id > rows[3].id  # AUTOINCREMENT: a cursor past old ids still sees new rows


async def test_failures_count_attempts_and_keep_rows(queue: SampleQueue, tmp_path: Path) -> None:
    queue.put(sample(1))
    await queue.flush()
    (row,) = await queue.fetch_after(0, 1)
    await queue.record_failure([row.id], 1204)
    await queue.record_failure([row.id], None)
    stats = read_stats(tmp_path / "q.db")
    assert stats.pending_samples == 1 and stats.state["retried"] == 2
    assert stats.state["last_reply_code"] == 1204
    with sqlite3.connect(tmp_path / "q.db") as conn:
        assert conn.execute("SELECT attempts FROM samples").fetchone() == (2,)


async def test_stats_read_a_live_queue(queue: SampleQueue, tmp_path: Path) -> None:
    for n in range(3):
        queue.put(sample(n, device=f"d{n}"))
    await queue.flush()
    stats = read_stats(tmp_path / "q.db")
    assert (stats.pending_samples, stats.pending_points) == (3, 6)
    assert (stats.oldest_ts_ms, stats.newest_ts_ms) == (BASE, BASE + 2)
    assert stats.file_bytes > 0 and stats.state["queued"] == 3


async def test_close_commits_the_open_group(tmp_path: Path) -> None:
    q = SampleQueue(QueueConfig(path=tmp_path / "q.db"))
    await q.open()
    q.put(sample(1))
    await q.close()
    assert read_stats(tmp_path / "q.db").pending_samples == 1


async def test_file_is_private_wal_and_versioned(queue: SampleQueue, tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (5,)


async def test_reopening_keeps_rows_and_applies_nothing_twice(tmp_path: Path) -> None:
    for _ in range(2):
        q = SampleQueue(QueueConfig(path=tmp_path / "q.db"))
        await q.open()
        q.put(sample(1))
        await q.close()
    assert read_stats(tmp_path / "q.db").pending_samples == 2


async def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    q = SampleQueue(QueueConfig(path=tmp_path / "q.db"))
    await q.open()
    await q.close()
    with sqlite3.connect(tmp_path / "q.db") as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
            " VALUES ('gatewayd', '9999_future', 'x')"
        )
    q = SampleQueue(QueueConfig(path=tmp_path / "q.db"))
    with pytest.raises(QueueError, match="newer gatewayd"):
        await q.open()


def test_stats_of_a_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(QueueError, match="no queue file"):
        read_stats(tmp_path / "none.db")
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE x (a)").connection.close()
    with pytest.raises(QueueError, match="not a gatewayd queue"):
        read_stats(foreign)


async def test_a_large_group_is_committed_before_the_tick(tmp_path: Path) -> None:
    from gatewayd.queue.store import GROUP_MAX_SAMPLES

    q = SampleQueue(QueueConfig(path=tmp_path / "q.db", commit_interval_ms=60_000))
    await q.open()
    committer = asyncio.create_task(q.run_committer())
    try:
        for n in range(GROUP_MAX_SAMPLES):
            q.put(sample(n))
        async with asyncio.timeout(10):  # far less than the one-minute tick
            await q.new_data.wait()
        assert read_stats(tmp_path / "q.db").pending_samples == GROUP_MAX_SAMPLES
    finally:
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        await q.close()


async def test_a_cancelled_flush_loses_nothing(tmp_path: Path) -> None:
    q = SampleQueue(QueueConfig(path=tmp_path / "q.db"))
    await q.open()
    for n in range(500):
        q.put(sample(n))
    flushing = asyncio.create_task(q.flush())
    await asyncio.sleep(0)  # let it hand the group to the writer thread
    flushing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flushing
    await q.close()
    assert read_stats(tmp_path / "q.db").pending_samples == 500


async def test_an_older_file_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite_utils

    from gatewayd.queue.store import MIGRATIONS, connect

    path = tmp_path / "old.db"
    conn = connect(path)
    MIGRATIONS.apply(sqlite_utils.Database(conn), stop_before="0002_held_samples")
    conn.execute(
        "INSERT INTO samples (product_key, device_key, ts_ms, points, n_points, enqueued_ms)"
        f" VALUES ('pk', 'd', {BASE}, '{{}}', 0, 0)"
    )
    conn.commit()
    conn.close()
    q = SampleQueue(QueueConfig(path=path))
    await q.open()
    assert [r.ts_ms for r in await q.fetch_after(0, 10)] == [BASE]  # kept, and visible
    await q.close()
    with sqlite3.connect(path) as check:
        columns = {row[1] for row in check.execute("PRAGMA table_info(samples)")}
    assert {"held_boot", "held_mono_ms"} <= columns


async def test_finding_held_readings_uses_the_partial_index_not_a_scan(
    queue: SampleQueue, tmp_path: Path
) -> None:
    with sqlite3.connect(tmp_path / "q.db") as conn:
        for where in ("held_boot = 'b'", "held_boot IS NOT NULL AND held_boot != 'b'"):
            plan = " ".join(
                row[3]
                for row in conn.execute(f"EXPLAIN QUERY PLAN SELECT id FROM samples WHERE {where}")
            )
            assert (
                "USING INDEX samples_held" in plan or "USING COVERING INDEX samples_held" in plan
            ), plan


def vm_steps(conn: sqlite3.Connection, work: Callable[[], object]) -> int:
    """SQLite virtual-machine instructions (in hundreds) that `work` runs on `conn`."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 100)
    try:
        work()
    finally:
        conn.set_progress_handler(None, 0)
    return steps


async def test_the_health_figures_cost_the_same_at_any_queue_length(tmp_path: Path) -> None:
    """They are read every health tick on the writer thread; a scan would grow with the backlog."""
    costs = []
    for n in (2_000, 40_000):
        store = open_store(tmp_path / f"q{n}.db", "off", 0)
        store.insert([sample(i) for i in range(n)])
        assert store.figures()[0] == n
        costs.append(vm_steps(store.conn, store.figures))
        store.conn.close()
    assert costs[1] <= costs[0] + 5, costs


async def test_the_health_figures_do_not_count_rows_gone_from_the_middle(tmp_path: Path) -> None:
    """Live readings sent during a drain leave holes above the backlog; counted as pending,
    400 of them made a 1 Mbit/s drain's ETA 20 % long near its end (issue 18)."""
    store = open_store(tmp_path / "q.db", "off", 0)
    store.insert([sample(i) for i in range(1_000)])
    store.conn.execute("DELETE FROM samples WHERE id > 500 AND id <= 900")  # sent ahead
    store.conn.commit()
    assert store.figures()[0] == 600
    store.conn.close()
