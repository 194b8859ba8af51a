"""The durable queue between acquisition and uplink: the SQL on one SQLite file in WAL mode.

Every reading is committed here before anything is sent, and a row leaves `samples` only on a 200
reply naming its request, eviction by the bounds, a move to `rejected`, or an operator's purge.
`Store` is used from exactly one thread (the writer thread of `queue.writer.SampleQueue`).
Here: the writes (group commits, acknowledgements, failed attempts, dead letters, counters);
the read queries of the forwarder and the health tick are in reads.py.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatewayd.clocks import now_ms
from gatewayd.config import QueueConfig
from gatewayd.model import Sample
from gatewayd.queue.eviction import (
    Bounds,
    BoundsKeeper,
    evict_old,
    evict_to_budget,
    group_bytes,
    used_bytes,
)
from gatewayd.queue.held import HeldRows
from gatewayd.queue.marker import check_and_mark
from gatewayd.queue.migrations import migrate
from gatewayd.queue.reads import QueueReads
from gatewayd.queue.reserve import SpaceKeeper
from gatewayd.queue.salvage import SalvageTarget
from gatewayd.queue.schema import connect, open_connection
from gatewayd.queue.sql import atomic, upsert

if TYPE_CHECKING:  # imports written before the split into modules keep working
    from gatewayd.queue.migrations import MIGRATIONS
    from gatewayd.queue.stats import QueueStats, file_bytes, read_stats
    from gatewayd.queue.writer import GROUP_MAX_SAMPLES, SampleQueue

__all__ = [
    "GROUP_MAX_SAMPLES",
    "MIGRATIONS",
    "QueueStats",
    "SampleQueue",
    "Store",
    "connect",
    "file_bytes",
    "migrate",
    "now_ms",
    "open_store",
    "read_stats",
]

log = logging.getLogger(__name__)

_MOVED = {
    "GROUP_MAX_SAMPLES": "writer",
    "SampleQueue": "writer",
    "QueueStats": "stats",
    "file_bytes": "stats",
    "read_stats": "stats",
    "MIGRATIONS": "migrations",  # built lazily there (sqlite-utils is not imported at start)
}


def __getattr__(name: str) -> Any:
    """Names that moved to their own modules, still importable from here."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"gatewayd.queue.{_MOVED[name]}"), name)
    raise AttributeError(name)


def open_store(
    path: Path,
    synchronous: str,
    max_bytes: int,
    cfg: QueueConfig | None = None,
    *,
    replaced: bool = False,
) -> Store:
    """Open (or create) the queue (see schema.open_connection) with its bounds.

    `replaced`: gatewayd moved the file aside itself (no "queue gone" report; marker.py).
    When the file was damaged, the fresh queue is marked to salvage the kept copy (SampleQueue
    runs the salvage; `pending_salvage` says from where).
    """
    conn, kept = open_connection(path, synchronous, max_bytes)
    try:
        check_and_mark(conn, path, replaced=replaced or kept is not None)
    except sqlite3.Error:
        conn.close()
        raise
    store = Store(conn, cfg)
    if kept is not None:
        store.begin_salvage(kept)
    return store


class Store(SalvageTarget, BoundsKeeper, SpaceKeeper, HeldRows, QueueReads):
    """Synchronous queue operations on one connection; used from exactly one thread."""

    def __init__(self, conn: sqlite3.Connection, cfg: QueueConfig | None = None) -> None:
        self.conn = conn
        self._page_bytes: int | None = None
        self.bounds = (
            Bounds(
                cfg.max_bytes,
                cfg.max_age_s,
                cfg.overflow,
                cfg.rejected_max_bytes,
                cfg.rejected_max_age_s,
            )
            if cfg
            else None
        )
        self.evicting = False  # inside an episode of eviction (logged once per episode)
        self.episode_evicted = 0
        self._init_salvage()
        #: The time rows are noted in by (enqueued_ms), and the time their age is judged by
        #: (None: the clock is not trusted, judge nothing): ClockGuard's, step-proof.
        self.enqueue_clock: Callable[[], int] = now_ms
        self.age_clock: Callable[[], int | None] = now_ms

    def used_bytes(self) -> int:
        """Bytes of the database in use (pages not on the free list)."""
        return used_bytes(self.conn)

    def insert(self, samples: list[Sample], clock_ms: int | None = None) -> int:
        """Commit a group; returns how many samples the bounds evicted (or refused).

        The result is not the number stored: it is what this insert cost (old rows evicted by
        age or bytes, or, under `drop_newest`, the group itself refused). The name stays: tests
        and SampleQueue (by name, "insert", through its executor) call it. Room is made before
        the group is written, so that it reuses the evicted rows' pages (eviction.group_bytes).
        """
        enqueued = clock_ms if clock_ms is not None else self.enqueue_clock()
        age_now = clock_ms if clock_ms is not None else self.age_clock()
        with atomic(self.conn):
            # Every reading handed over is polled, a refused one too: the books (README, "The
            # queue file") balance only if what `evicted` counts was counted in first.
            self._bump("polled", len(samples))
            evicted = 0
            rows = self._rows(samples, enqueued)
            bounds = self.bounds
            first_new = self._next_id()
            if bounds:
                if age_now is not None:
                    evicted += evict_old(self.conn, age_now - bounds.max_age_s * 1000, first_new)
                # The room the group will take (eviction.group_bytes): made before it is
                # written under drop_oldest, else the group is refused under drop_newest.
                room = bounds.data_budget - group_bytes(rows, self._page_size())
                if bounds.overflow == "drop_newest" and self.used_bytes() > room:
                    evicted += len(rows)
                    rows = []
                elif bounds.overflow == "drop_oldest":
                    evicted += evict_to_budget(self.conn, room, len(rows), first_new)
            self._insert_rows(rows)
            if bounds:
                if bounds.overflow == "drop_oldest":  # the estimate fell short
                    evicted += evict_to_budget(self.conn, bounds.data_budget, len(rows), first_new)
                self._bump("evicted", evicted)
                self._evict_rejected(bounds, age_now, by_bytes=False)
            if clock_ms is None:  # where the queue's clock stood (acquire/clock.py resumes it)
                self._set_many({"queue_clock_ms": enqueued})
        self._episode(evicted)
        return evicted

    def _next_id(self) -> int:
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'samples'").fetchone()
        return int(row[0]) + 1 if row else 1

    def _page_size(self) -> int:
        """Fixed once the file exists: read at the first group, not at every commit."""
        if self._page_bytes is None:
            self._page_bytes = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
        return self._page_bytes

    @staticmethod
    def _rows(samples: list[Sample], enqueued: int) -> list[tuple[Any, ...]]:
        """The `samples` rows of a group, as inserted (points as JSON, exactly as sent)."""
        return [
            (
                s.product_key,
                s.device_key,
                s.ts_ms,
                json.dumps(s.points, separators=(",", ":"), allow_nan=False),
                len(s.points),
                enqueued,
                s.held_boot,
                s.mono_ms if s.held_boot else None,
            )
            for s in samples
        ]

    def _insert_rows(self, rows: list[tuple[Any, ...]]) -> None:
        self.conn.executemany(
            "INSERT INTO samples (product_key, device_key, ts_ms, points, n_points, enqueued_ms,"
            " held_boot, held_mono_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._bump("queued", len(rows))

    def reject(self, ids: list[int], code: int, message: str) -> int:
        """Move rows the hub refused for their content into the dead-letter table."""
        with atomic(self.conn):
            moved = self.conn.execute(
                "INSERT OR REPLACE INTO rejected (id, product_key, device_key, ts_ms, points,"
                " n_points, enqueued_ms, attempts, code, message, rejected_ms)"
                " SELECT id, product_key, device_key, ts_ms, points, n_points, enqueued_ms,"
                " attempts + 1, ?, ?, ? FROM samples WHERE id IN (SELECT value FROM json_each(?))",
                (code, message, now_ms(), json.dumps(ids)),
            ).rowcount
            self.conn.execute(
                "DELETE FROM samples WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
            self._bump("rejected", moved)
            if self.bounds:
                self._evict_rejected(self.bounds, self.age_clock(), by_bytes=True)
            self._set_many({"last_reply_code": code, "last_reply_ms": now_ms()})
        return moved

    def ack(self, ids: list[int]) -> int:
        """Delete the rows a 200 reply confirmed; returns how many were still there."""
        with atomic(self.conn):
            cursor = self.conn.execute(
                "DELETE FROM samples WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
            self._bump("sent", cursor.rowcount)
            self._set_many({"last_reply_code": 200, "last_reply_ms": now_ms()})
        self.note_acked(ids)
        return cursor.rowcount

    def record_failure(self, ids: list[int], code: int | None) -> None:
        """Count a failed attempt on rows that stay queued (no reply, or a non-200 code)."""
        with atomic(self.conn):
            self.conn.execute(
                "UPDATE samples SET attempts = attempts + 1"
                " WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
            self._bump("retried", len(ids))
            if code is not None:
                self._set_many({"last_reply_code": code, "last_reply_ms": now_ms()})

    def count_lost(self, key: str, n: int) -> None:
        with self.conn:
            self.add_counter(key, n)

    def set_state(self, values: dict[str, Any]) -> None:
        with atomic(self.conn):
            self._set_many(values)

    def _bump(self, counter: str, n: int) -> None:
        self.conn.execute("UPDATE state SET value = value + ? WHERE key = ?", (n, counter))

    def _set_many(self, values: dict[str, Any]) -> None:
        upsert(self.conn, "state", values)
