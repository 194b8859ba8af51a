"""Reading a damaged queue file around its damage, and copying what is readable into a fresh one.

SQLite stops a scan at the first damaged page, but a lookup by id range walks only the pages on
the way to that range. So a damaged file is read in id ranges; a range that fails is halved until
the ids that cannot be read are known exactly. Everything else is read: the rows before the damage
and the rows after it. The unreadable ids are an upper bound of what was lost (an id may have
been deleted before the damage; nothing tells us).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gatewayd.queue.schema import CORRUPTION, connect
from gatewayd.queue.sql import upsert

log = logging.getLogger(__name__)

#: Columns copied from a damaged file into the fresh queue, per table (ids are given anew
#: for samples, so the forwarder's cursor, which only grows, meets them).
SALVAGED_COLUMNS = {
    "samples": "id, product_key, device_key, ts_ms, points, n_points, enqueued_ms, attempts,"
    " held_boot, held_mono_ms",
    "rejected": "id, product_key, device_key, ts_ms, points, n_points, enqueued_ms, attempts,"
    " code, message, rejected_ms",
}


def is_corruption(exc: BaseException) -> bool:
    """True for what SQLite says about a damaged file (not for locks, full disks or permissions)."""
    return (
        isinstance(exc, sqlite3.DatabaseError)
        and getattr(exc, "sqlite_errorname", "") in CORRUPTION
    )


def is_disk_full(exc: BaseException) -> bool:
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL"


def _one(conn: sqlite3.Connection, sql: str) -> int | None:
    try:
        row = conn.execute(sql).fetchone()
    except sqlite3.DatabaseError:
        return None
    return None if row is None or row[0] is None else int(row[0])


class RangeReader:
    """Reads one table of a (possibly damaged) queue file in id order, in chunks, around damage."""

    def __init__(
        self, conn: sqlite3.Connection, table: str, columns: str, start_id: int = 0
    ) -> None:
        self.conn = conn
        self.table = table
        self.columns = columns
        self.unreadable: list[list[int]] = []  # [first, last] id ranges, merged
        low = _one(conn, f"SELECT min(id) FROM {table}")
        high = _one(conn, f"SELECT max(id) FROM {table}")
        if high is None:  # the right edge is damaged: the sequence, else a bound from the size
            high = _one(conn, f"SELECT seq FROM sqlite_sequence WHERE name = '{table}'")
        if high is None:
            pages = _one(conn, "PRAGMA page_count") or 0
            high = (low or 0) + pages * 256  # no page of 4 KiB holds more rows
        self.next_id = max(start_id, low if low is not None else 1)
        self.high = high

    @property
    def unreadable_ids(self) -> int:
        return sum(last - first + 1 for first, last in self.unreadable)

    def chunks(self, size: int = 2000) -> Iterator[list[tuple[Any, ...]]]:
        """Readable rows in id order, `size` ids at a time (an empty list for an empty range)."""
        while self.next_id <= self.high:
            first, last = self.next_id, min(self.high, self.next_id + size - 1)
            rows: list[tuple[Any, ...]] = []
            self._read(first, last, rows)
            self.next_id = last + 1
            yield rows

    def _read(self, first: int, last: int, into: list[tuple[Any, ...]]) -> None:
        try:
            into += self.conn.execute(
                f"SELECT {self.columns} FROM {self.table} WHERE id BETWEEN ? AND ? ORDER BY id",
                (first, last),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            if first == last:
                self._lost(first)
                return
            middle = (first + last) // 2
            self._read(first, middle, into)
            self._read(middle + 1, last, into)

    def _lost(self, row_id: int) -> None:
        if self.unreadable and self.unreadable[-1][1] == row_id - 1:
            self.unreadable[-1][1] = row_id
        else:
            self.unreadable.append([row_id, row_id])


def open_damaged(path: Path) -> sqlite3.Connection:
    """A read-only connection to a kept-aside file, usable from any one thread at a time."""
    conn = connect(path, readonly=True)
    conn.close()  # connect() checked the path; reopen so a worker thread may use it
    uri = f"{path.absolute().as_uri()}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False)


def describe(ranges: list[list[int]], limit: int = 5) -> str:
    shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:limit])
    more = f" and {len(ranges) - limit} more ranges" if len(ranges) > limit else ""
    return shown + more


class Salvage:
    """Copies a kept-aside damaged queue into the fresh one, chunk by chunk (see SampleQueue)."""

    def __init__(self, damaged: Path, start_id: int = 0) -> None:
        self.damaged = damaged
        self.conn = open_damaged(damaged)
        self.samples = RangeReader(self.conn, "samples", SALVAGED_COLUMNS["samples"], start_id)
        self._chunks = self.samples.chunks()

    def next_samples(self) -> tuple[list[tuple[Any, ...]], int] | None:
        """The next chunk of readable samples and the id to resume from; None when done."""
        for rows in self._chunks:
            return rows, self.samples.next_id
        return None

    def rejected(self) -> tuple[list[tuple[Any, ...]], int]:
        """All readable dead letters (a small table) and how many ids could not be read."""
        reader = RangeReader(self.conn, "rejected", SALVAGED_COLUMNS["rejected"])
        rows = [row for chunk in reader.chunks() for row in chunk]
        return rows, reader.unreadable_ids

    @staticmethod
    def read_counters(conn: sqlite3.Connection) -> dict[str, int]:
        """The old file's counters where readable (so `sent`, `evicted` … carry on)."""
        try:
            return {
                str(k): int(v)
                for k, v in conn.execute("SELECT key, value FROM state")
                if isinstance(v, int) and not str(k).startswith("last_")
            }
        except sqlite3.DatabaseError:
            return {}

    def close(self) -> None:
        self.conn.close()


class SalvageTarget:
    """The fresh queue's side of a salvage: where it comes from, what is done, what is skipped.

    Mixed into Store (same connection, same writer thread). Progress is kept in `meta`, in the
    same transaction as each chunk, so a restart resumes where it stopped.
    """

    conn: sqlite3.Connection

    def _init_salvage(self) -> None:
        #: Rows of the damaged file have ids up to here; new rows get ids above it.
        self.salvage_base = 0
        #: Old ids the hub confirmed after the switch (in flight then): not copied again.
        self.acked_old: set[int] = set()
        #: The highest id handed to the forwarder: new ids must pass its cursor.
        self.max_id_seen = 0

    def pending_salvage(self) -> tuple[Path, int] | None:
        """(kept file, next id to read) while a salvage is unfinished."""
        rows = dict(self.conn.execute("SELECT key, value FROM meta WHERE key LIKE 'salvage_%'"))
        if "salvage_from" not in rows:
            return None
        self.salvage_base = int(rows.get("salvage_base", 0))
        return Path(str(rows["salvage_from"])), int(rows.get("salvage_next_id", 0))

    def begin_salvage(self, kept: Path) -> None:
        """Mark the fresh queue to salvage `kept`: ids continue past the old file's."""
        old = open_damaged(kept)
        try:
            base = max(
                self.max_id_seen,
                _one(old, "SELECT seq FROM sqlite_sequence WHERE name = 'samples'") or 0,
                _one(old, "SELECT max(id) FROM samples") or 0,
            )
            counters = Salvage.read_counters(old)
        finally:
            old.close()
        with self.conn:
            moved = self.conn.execute(
                "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'samples'", (base,)
            ).rowcount
            if not moved:
                self.conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('samples', ?)", (base,)
                )
            upsert(self.conn, "state", counters, add=True)
            self.conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("salvage_from", str(kept)), ("salvage_next_id", 0), ("salvage_base", base)],
            )
        self.salvage_base = base

    def note_acked(self, ids: list[int]) -> None:
        if self.salvage_base:
            self.acked_old.update(i for i in ids if i <= self.salvage_base)

    def note_seen(self, row_id: int) -> None:
        self.max_id_seen = max(self.max_id_seen, row_id)

    def insert_salvaged(self, rows: list[tuple[Any, ...]], next_id: int) -> int:
        """Append a chunk of salvaged samples (new ids, so the forwarder's cursor meets them)."""
        keep = [row[1:] for row in rows if row[0] not in self.acked_old]
        with self.conn:
            self.conn.executemany(
                "INSERT INTO samples (product_key, device_key, ts_ms, points, n_points,"
                " enqueued_ms, attempts, held_boot, held_mono_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                keep,
            )
            self.add_counter("salvaged", len(keep))
            self.add_counter("salvage_skipped_confirmed", len(rows) - len(keep))
            self.conn.execute("UPDATE meta SET value = ? WHERE key = 'salvage_next_id'", (next_id,))
        return len(keep)

    def finish_salvage(
        self, rejected: list[tuple[Any, ...]], lost: int, lost_rejected: int = 0
    ) -> None:
        """Dead letters copied as they were; the unreadable ids counted; the salvage closed."""
        with self.conn:
            self.conn.executemany(
                "INSERT OR IGNORE INTO rejected (id, product_key, device_key, ts_ms, points,"
                " n_points, enqueued_ms, attempts, code, message, rejected_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rejected,
            )
            self.add_counter("lost_corrupt", lost)
            self.add_counter("lost_corrupt_rejected", lost_rejected)
            self.conn.execute("DELETE FROM meta WHERE key LIKE 'salvage_%'")
        self.salvage_base = 0
        self.acked_old.clear()

    def add_counter(self, key: str, n: int) -> None:
        """Add to a counter in `state`, creating it (counters added after 0001 start absent)."""
        upsert(self.conn, "state", {key: n}, add=True)
