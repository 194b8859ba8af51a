"""Keeping a queue file within its bounds: bytes on disk and the age of its readings.

What is dropped is counted by the caller (the `evicted` counter) and logged once per episode.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass
class Bounds:
    """Where a queue file must stay, and what to drop when it would not."""

    max_bytes: int
    max_age_s: int
    overflow: str

    @property
    def data_budget(self) -> int:
        """Bytes the database pages may use, leaving room for the WAL (see connect())."""
        wal_limit = min(64 << 20, max(self.max_bytes // 16, 256 << 10))
        return self.max_bytes - wal_limit


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database in use (pages not on the free list)."""
    pages, free, size = (
        conn.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("page_count", "freelist_count", "page_size")
    )
    return int((pages - free) * size)


def evict_old(conn: sqlite3.Connection, cutoff_ms: int) -> int:
    """Evict samples older than the age bound, looking only at the head of the queue."""
    cursor = conn.execute(
        "DELETE FROM samples WHERE id IN (SELECT id FROM samples ORDER BY id LIMIT 1000)"
        " AND ts_ms < ? AND held_boot IS NULL",
        (cutoff_ms,),
    )
    return cursor.rowcount


def evict_to_budget(conn: sqlite3.Connection, budget: int, chunk: int) -> int:
    evicted = 0
    while used_bytes(conn) > budget:
        cursor = conn.execute(
            "DELETE FROM samples WHERE id IN (SELECT id FROM samples ORDER BY id LIMIT ?)",
            (chunk,),
        )
        if cursor.rowcount == 0:
            break
        evicted += cursor.rowcount
    return evicted
