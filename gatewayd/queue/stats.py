"""`gatewayd queue stats`: a summary read from the file, so it works while the daemon runs."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from gatewayd.errors import QueueError
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


def file_bytes(path: Path) -> int:
    """The queue's size on disk: the database plus its WAL and shared-memory files."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


def read_stats(path: Path) -> QueueStats:
    """Open the file read-only and summarise it."""
    conn = connect(path, readonly=True)
    try:
        db = sqlite_utils.Database(conn)
        if "samples" not in db.table_names():
            raise QueueError(f"{path} is not a gatewayd queue (no samples table)")
        pending, points, oldest, newest = conn.execute(
            "SELECT count(*), coalesce(sum(n_points), 0), min(ts_ms), max(ts_ms) FROM samples"
        ).fetchone()
        rejected = conn.execute("SELECT count(*) FROM rejected").fetchone()[0]
        state = {row["key"]: row["value"] for row in db.query("SELECT key, value FROM state")}
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
    )
