"""A marker beside the queue, so that a queue which existed and is gone is noticed.

SQLite cannot tell a new queue from one whose file was removed, or whose -wal (holding every
row committed since the last checkpoint) was deleted before a crash: both open as an empty
file, and the daemon would carry on as if nothing had been lost. The marker names the queue
it stands for by an id kept in the file's `meta`; at each open a missing or different id is
reported (CRITICAL, and counted in `queues_gone`) before a fresh queue is started.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

from gatewayd.queue.sql import upsert

log = logging.getLogger(__name__)


def marker_path(queue: Path) -> Path:
    return queue.with_name(queue.name + ".marker")


def _queue_id(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'queue_id'").fetchone()
    return None if row is None else str(row[0])


def _read_marker(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("queue_marker_unreadable path=%s error=%r", path, str(exc))
        return None
    return data if isinstance(data, dict) else None


def check_and_mark(conn: sqlite3.Connection, queue: Path, *, replaced: bool = False) -> bool:
    """Report a queue that is gone (True), then make the marker name the file now open.

    `replaced`: gatewayd itself moved the old file aside (damage), which it has said already.
    """
    queue_id = _queue_id(conn)
    marker = marker_path(queue)
    previous = _read_marker(marker)
    gone = previous is not None and previous.get("queue_id") != queue_id and not replaced
    if queue_id is None:
        queue_id = uuid.uuid4().hex
        with conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('queue_id', ?)", (queue_id,))
    if gone:
        assert previous is not None
        log.critical(
            "queue_gone path=%s previous_queue=%s created=%s note='the queue that was here is"
            " gone (file removed, or its -wal lost before a crash): readings it held are lost;"
            " started a fresh queue'",
            queue,
            previous.get("queue_id"),
            previous.get("created", "?"),
        )
        with conn:
            upsert(conn, "state", {"queues_gone": 1}, add=True)
    if previous is None or previous.get("queue_id") != queue_id:
        _write_marker(marker, queue, queue_id)
    return gone


def _write_marker(marker: Path, queue: Path, queue_id: str) -> None:
    body = json.dumps(
        {"queue_id": queue_id, "queue": str(queue), "created": datetime.now(UTC).isoformat()}
    )
    temporary = marker.with_name(marker.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(body + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(marker)
    except OSError as exc:  # a full disk: the queue works on; the next open tries again
        log.warning("queue_marker_not_written path=%s error=%r", marker, str(exc))
