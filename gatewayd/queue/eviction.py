"""Keeping a queue file within its bounds: bytes on disk and the age of its readings.

What is dropped is counted by the caller (the `evicted` counter) and logged once per episode.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("gatewayd.queue.store")


@dataclass
class Bounds:
    """Where a queue file must stay, and what to drop when it would not."""

    max_bytes: int
    max_age_s: int
    overflow: str
    rejected_max_bytes: int = 0  # 0: a quarter of max_bytes
    rejected_max_age_s: int = 2_592_000

    @property
    def rejected_budget(self) -> int:
        return self.rejected_max_bytes or self.max_bytes // 4

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


def group_bytes(rows: Sequence[Sequence[Any]], page_size: int) -> int:
    """The bytes of pages a group of `samples` rows (store.Store._rows) will take when appended.

    Asked before the insert so that `drop_oldest` frees that room first and the group reuses the
    freed pages: inserted first, the group grew the file past the budget and the WAL held its
    pages and the evicted ones (two groups over the bound, for a large group). Rows are
    appended, so pages fill in order: a 2.9 KB row takes a 4 KiB page of its own. Each row has
    a record in the table and an entry in the device index; both are estimated from the text
    they hold (ints and the record's header: 40 bytes at most).
    """
    usable = page_size - 12  # a leaf's header, and the 4 bytes SQLite keeps at the end
    pages = 0
    for cells in (
        [len(r[0]) + len(r[1]) + len(r[3]) + 40 for r in rows],  # the table's records
        [len(r[0]) + len(r[1]) + 16 for r in rows],  # samples_device's entries
    ):
        room = 0
        for cell in cells:
            if cell + 2 > usable:  # on overflow pages of its own
                pages += -(-cell // (page_size - 4))
            elif cell + 2 > room:
                pages += 1
                room = usable - cell - 2
            else:
                room -= cell + 2
    return pages * page_size


def evict_old(conn: sqlite3.Connection, cutoff_ms: int, below_id: int) -> int:
    """Evict samples older than the age bound, looking only at the head of the queue.

    Old means both taken and queued before the cutoff: the queue's clock does not step within
    a run (ClockGuard.queue_now_ms), so a wall-clock step never makes rows old. Only ids below
    `below_id` (the group being inserted is never its own victim).
    """
    cursor = conn.execute(
        "DELETE FROM samples WHERE id IN (SELECT id FROM samples WHERE id < ? ORDER BY id"
        " LIMIT 1000) AND ts_ms < ? AND enqueued_ms < ? AND held_boot IS NULL",
        (below_id, cutoff_ms, cutoff_ms),
    )
    return cursor.rowcount


def evict_to_budget(conn: sqlite3.Connection, budget: int, first_step: int, below_id: int) -> int:
    """Evict the oldest samples (ids below `below_id`) until the pages in use fit `budget`.

    What a group needs, not a fixed block: the first step is `first_step` rows (the size of the
    group that needs the room), and each further one twice the last, as deleting rows frees a
    page only once its last row is gone. Evicting 64 rows for a group of two one-page samples
    dropped 6 s of data each time, and the WAL held the 64 freed pages on top of its share.
    """
    evicted = 0
    step = max(1, first_step)
    while used_bytes(conn) > budget:
        cursor = conn.execute(
            "DELETE FROM samples WHERE id IN (SELECT id FROM samples WHERE id < ?"
            " ORDER BY id LIMIT ?)",
            (below_id, step),
        )
        if cursor.rowcount == 0:
            break
        evicted += cursor.rowcount
        step *= 2
    return evicted


def rejected_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the dead-letter table's pages (dbstat), else an estimate from its rows."""
    try:
        row = conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name = 'rejected'").fetchone()
    except sqlite3.OperationalError:  # SQLite built without dbstat
        row = conn.execute(
            "SELECT sum(length(points) + length(message) + 120) FROM rejected"
        ).fetchone()
    return int(row[0] or 0)


def evict_rejected(conn: sqlite3.Connection, bounds: Bounds, now_ms: int | None) -> int:
    """Keep dead letters within their own bound: age since rejection (unless `now_ms` is None:
    an untrusted clock), then bytes; oldest rejection first."""
    evicted = 0
    if now_ms is not None:
        evicted = conn.execute(
            "DELETE FROM rejected WHERE rejected_ms < ?",
            (now_ms - bounds.rejected_max_age_s * 1000,),
        ).rowcount
    budget = bounds.rejected_budget
    while (size := rejected_bytes(conn)) > budget:
        rows = conn.execute("SELECT count(*) FROM rejected").fetchone()[0]
        if not rows:
            break
        excess = max(1, -(-rows * (size - budget) // size))
        evicted += conn.execute(
            "DELETE FROM rejected WHERE rowid IN"
            " (SELECT rowid FROM rejected ORDER BY rejected_ms, id LIMIT ?)",
            (excess,),
        ).rowcount
    return evicted


class BoundsKeeper:
    """Store's eviction bookkeeping: dead letters' own bound, and one log line per episode."""

    conn: sqlite3.Connection
    bounds: Bounds | None
    evicting: bool
    episode_evicted: int

    def add_counter(self, key: str, n: int) -> None:
        raise NotImplementedError

    def _evict_rejected(self, bounds: Bounds, clock_ms: int | None, *, by_bytes: bool) -> None:
        """Dead letters past their age (cheap: an index) or, after a rejection, their bytes.

        `clock_ms` None: the clock is not trusted, nothing is judged by age.
        """
        if clock_ms is None and by_bytes:
            evicted = evict_rejected(self.conn, bounds, None)
        elif clock_ms is None:
            return
        elif by_bytes:
            evicted = evict_rejected(self.conn, bounds, clock_ms)
        else:
            cutoff = clock_ms - bounds.rejected_max_age_s * 1000
            evicted = self.conn.execute(
                "DELETE FROM rejected WHERE rejected_ms < ?", (cutoff,)
            ).rowcount
        if evicted:
            self.add_counter("rejected_evicted", evicted)
            log.warning(
                "dead_letters_evicted count=%d max_bytes=%d max_age_s=%d",
                evicted,
                bounds.rejected_budget,
                bounds.rejected_max_age_s,
            )

    def _episode(self, evicted: int) -> None:
        if evicted and not self.evicting:
            self.evicting = True
            assert self.bounds is not None
            log.warning(
                "queue_full_evicting policy=%s max_bytes=%d max_age_s=%d",
                self.bounds.overflow,
                self.bounds.max_bytes,
                self.bounds.max_age_s,
            )
        self.episode_evicted += evicted
        if not evicted and self.evicting:
            self.evicting = False
            log.info("queue_within_bounds evicted_in_episode=%d", self.episode_evicted)
            self.episode_evicted = 0
