"""`gatewayd queue stats`: a summary read from the file, so it works while the daemon runs."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewayd.errors import QueueError
from gatewayd.queue.salvage import RangeReader, describe, is_corruption
from gatewayd.queue.schema import connect


@dataclass(frozen=True)
class QueueStats:
    """What `gatewayd queue stats` shows; read from the file, so it works while the daemon runs."""

    path: str
    pending_samples: int
    pending_points: int
    oldest_ts_ms: int | None
    newest_ts_ms: int | None
    file_bytes: int
    rejected: int
    state: dict[str, Any]
    #: What could not be read (a damaged file), e.g. "samples ids 20011-20290"; all else was.
    unreadable: list[str] = field(default_factory=list)
    #: Sample ids that could not be read: an upper bound of the samples the damage cost.
    unreadable_samples: int = 0


def file_bytes(path: Path) -> int:
    """The queue's size on disk as `max_bytes` bounds it: the database plus its WAL.

    Not the `-shm` file: SQLite's memory-mapped index of the WAL (32 KiB per 4,096 frames), no
    queue data, which counted it 32 KiB over a bound the queue kept.
    """
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


def read_stats(path: Path) -> QueueStats:
    """Open the file read-only and summarise it; a damaged file is read around its damage."""
    import sqlite_utils  # not at import: the daemon imports this module before READY

    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error as exc:  # a directory, a file it may not read: as the other commands
        raise QueueError(f"cannot open {path}: {exc}") from None
    try:
        db = sqlite_utils.Database(conn)
        try:
            names = db.table_names()
        except sqlite3.DatabaseError as exc:
            # Not a database at all (no SQLite header): nothing to read around, and the other
            # queue commands say so and exit 1; "pending 0" would pass for an empty queue.
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
                raise QueueError(f"{path}: {exc}") from None
            if not is_corruption(exc):
                raise
            names = ["samples"]  # a damaged schema: read around the damage below
        try:
            if "samples" not in names:
                raise QueueError(f"{path} is not a gatewayd queue (no samples table)")
            pending, points, oldest, newest = conn.execute(
                "SELECT count(*), coalesce(sum(n_points), 0), min(ts_ms), max(ts_ms) FROM samples"
            ).fetchone()
            rejected = conn.execute("SELECT count(*) FROM rejected").fetchone()[0]
            unreadable: list[str] = []
            lost = 0
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            pending, points, oldest, newest, samples = _read_around_damage(conn)
            if not pending:
                _samples_readable_at_all(conn, path)
            lost = samples.unreadable_ids
            unreadable = [f"samples ids {describe(samples.unreadable, 20)}"] if lost else []
            rejected = _count_around_damage(conn, unreadable)
        try:
            state = {row["key"]: row["value"] for row in db.query("SELECT key, value FROM state")}
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            state = {}
            unreadable.append("state (the counters)")
    except sqlite3.DatabaseError as exc:
        raise QueueError(f"cannot read {path}: {exc}") from None
    finally:
        conn.close()
    return QueueStats(
        path=str(path),
        pending_samples=pending,
        pending_points=points,
        oldest_ts_ms=oldest,
        newest_ts_ms=newest,
        file_bytes=file_bytes(path),
        rejected=rejected,
        state=state,
        unreadable=unreadable,
        unreadable_samples=lost,
    )


def _samples_readable_at_all(conn: sqlite3.Connection, path: Path) -> None:
    """A file cut short (or whose samples table's root is gone) has no row to read around:
    saying "pending 0" would pass for an empty queue, so it fails as the other commands do."""
    try:
        conn.execute("SELECT max(id) FROM samples").fetchone()
    except sqlite3.DatabaseError as exc:
        raise QueueError(f"cannot read {path}: {exc} (no sample can be read)") from None


def _read_around_damage(
    conn: sqlite3.Connection,
) -> tuple[int, int, int | None, int | None, RangeReader]:
    reader = RangeReader(conn, "samples", "n_points, ts_ms")
    count = points = 0
    oldest: int | None = None
    newest: int | None = None
    for rows in reader.chunks(20_000):
        count += len(rows)
        for n_points, ts_ms in rows:
            points += n_points
            oldest = ts_ms if oldest is None else min(oldest, ts_ms)
            newest = ts_ms if newest is None else max(newest, ts_ms)
    return count, points, oldest, newest, reader


def _count_around_damage(conn: sqlite3.Connection, unreadable: list[str]) -> int:
    reader = RangeReader(conn, "rejected", "id")
    count = sum(len(rows) for rows in reader.chunks(20_000))
    if reader.unreadable:
        unreadable.append(f"rejected ids {describe(reader.unreadable, 20)}")
    return count
