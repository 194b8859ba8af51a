"""What an operator does to a queue file by hand: look, export, requeue, purge, compact.

Each function opens its own connection, so it works on a live queue while the daemon writes
(WAL lets readers and one more writer take turns) and on a copy taken off a gateway. Writes
wait up to the busy timeout for the daemon's writer.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from gatewayd.clocks import now_ms
from gatewayd.errors import QueueError
from gatewayd.queue.salvage import RangeReader, describe, is_corruption
from gatewayd.queue.schema import connect
from gatewayd.queue.sql import upsert
from gatewayd.queue.stats import file_bytes

SAMPLE_COLUMNS = "id, product_key, device_key, ts_ms, points, enqueued_ms, attempts"


@contextmanager
def _open(path: Path, *, write: bool = False) -> Iterator[sqlite_utils.Database]:
    if not path.exists():
        raise QueueError(f"no queue file at {path}")
    try:
        conn = connect(path, readonly=not write) if not write else sqlite3.connect(path, timeout=10)
    except sqlite3.Error as exc:
        raise QueueError(f"cannot open {path}: {exc}") from None
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        db = sqlite_utils.Database(conn)
        if "samples" not in db.table_names():
            raise QueueError(f"{path} is not a gatewayd queue (no samples table)")
        yield db
    except sqlite3.Error as exc:
        raise QueueError(f"{path}: {exc}") from None
    finally:
        conn.close()


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["points"] = json.loads(row["points"])
    return row


def peek(path: Path, n: int) -> list[dict[str, Any]]:
    """The oldest `n` pending samples, in the order they will be sent."""
    with _open(path) as db:
        rows = db.query(f"SELECT {SAMPLE_COLUMNS} FROM samples ORDER BY id LIMIT ?", [n])
        return [_decode(r) for r in rows]


def rejected(path: Path, n: int, code: int | None = None) -> list[dict[str, Any]]:
    """Dead-lettered samples, newest rejection first, with the hub's code and message."""
    where, params = ("WHERE code = ?", [code]) if code is not None else ("", [])
    with _open(path) as db:
        rows = db.query(
            f"SELECT {SAMPLE_COLUMNS}, code, message, rejected_ms FROM rejected {where}"
            " ORDER BY rejected_ms DESC, id DESC LIMIT ?",
            [*params, n],
        )
        return [_decode(r) for r in rows]


def requeue_rejected(path: Path, code: int | None = None) -> int:
    """Move dead-lettered samples back to the queue (after the model was fixed in the cloud)."""
    where, params = ("WHERE code = ?", [code]) if code is not None else ("", [])
    with _open(path, write=True) as db, db.atomic():
        moved = db.execute(
            "INSERT INTO samples (product_key, device_key, ts_ms, points, n_points,"
            " enqueued_ms, attempts) SELECT product_key, device_key, ts_ms, points, n_points,"
            f" enqueued_ms, attempts FROM rejected {where} ORDER BY ts_ms, id",
            params,
        ).rowcount
        db.execute(f"DELETE FROM rejected {where}", params)
        upsert(db.conn, "state", {"requeued": moved}, add=True)
        return int(moved)


def _filters(
    device: str | None, since_ms: int | None, until_ms: int | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if device is not None:
        clauses.append("device_key = ?")
        params.append(device)
    if since_ms is not None:
        clauses.append("ts_ms >= ?")
        params.append(since_ms)
    if until_ms is not None:
        clauses.append("ts_ms < ?")
        params.append(until_ms)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def export(
    path: Path,
    device: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Pending samples (filtered) in queue order, one dict each; streams, never loads all.

    A damaged file is read around its damage (by id ranges, salvage.RangeReader); after the
    last row, QueueError names the ids that could not be read.
    """
    where, params = _filters(device, since_ms, until_ms)
    last_id = 0
    with _open(path) as db:
        try:
            for row in db.query(f"SELECT {SAMPLE_COLUMNS} FROM samples{where} ORDER BY id", params):
                last_id = row["id"]
                yield _decode(row)
            return
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
        reader = RangeReader(db.conn, "samples", SAMPLE_COLUMNS, start_id=last_id + 1)
        names = [c.strip() for c in SAMPLE_COLUMNS.split(",")]
        for rows in reader.chunks():
            for values in rows:
                row = dict(zip(names, values, strict=True))
                if _matches(row, device, since_ms, until_ms):
                    yield _decode(row)
        raise QueueError(
            f"{path} is damaged: unreadable sample ids {describe(reader.unreadable, 20)}"
            f" ({reader.unreadable_ids:,} ids); every other row was exported"
        )


def _matches(
    row: dict[str, Any], device: str | None, since_ms: int | None, until_ms: int | None
) -> bool:
    return (
        (device is None or row["device_key"] == device)
        and (since_ms is None or row["ts_ms"] >= since_ms)
        and (until_ms is None or row["ts_ms"] < until_ms)
    )


def purge(path: Path, device: str | None = None, before_ms: int | None = None) -> int:
    """Drop pending samples (all, one device's, or those taken before a time); counted."""
    where, params = _filters(device, None, before_ms)
    with _open(path, write=True) as db, db.atomic():
        purged = db.execute(f"DELETE FROM samples{where}", params).rowcount
        upsert(db.conn, "state", {"purged": purged}, add=True)
        upsert(db.conn, "state", {"last_purge_ms": now_ms()})
        return int(purged)


def vacuum(path: Path) -> tuple[int, int]:
    """Hand free pages back to the file system; returns (bytes before, bytes after)."""
    before = file_bytes(path)
    with _open(path, write=True) as db:
        mode = db.execute("PRAGMA auto_vacuum").fetchone()[0]
        if mode == 2:  # incremental: cheap, and fine next to a running daemon
            # Through Python's sqlite3 one execution may free only a page: repeat until done.
            for _ in range(100_000):
                if db.execute("PRAGMA freelist_count").fetchone()[0] == 0:
                    break
                list(db.execute("PRAGMA incremental_vacuum(1000)"))
        else:
            db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return before, file_bytes(path)
