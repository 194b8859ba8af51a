"""The queue's read queries: the rows the forwarder sends next, and the health figures.

Apart from store.py because they change nothing: they answer the forwarder's two cursors (the
backlog's, oldest first, and the live pass's, newest first), its jump over a parked device's rows
through the device index, and the health tick's figures, each by index seeks, so that what they
cost does not grow with the queue. Mixed into Store (same connection, same writer thread).
"""

from __future__ import annotations

import sqlite3
from typing import Literal

from gatewayd.model import QueuedSample

#: Up to this many ids between the queue's ends, the health figures count its rows exactly.
EXACT_COUNT_MAX = 100_000


class QueueReads:
    """Store's read queries on `samples`."""

    conn: sqlite3.Connection

    def note_seen(self, row_id: int) -> None:
        raise NotImplementedError  # SalvageTarget's: new ids must pass the highest one handed out

    def fetch_after(self, after_id: int, limit: int) -> list[QueuedSample]:
        """The oldest rows past `after_id`, oldest first; readings still held are left out."""
        return self._rows_past(after_id, limit, "ASC")

    def fetch_newest(self, after_id: int, limit: int) -> list[QueuedSample]:
        """The newest rows past `after_id`, newest first (a cheap scan from the end)."""
        return self._rows_past(after_id, limit, "DESC")

    def _rows_past(
        self, after_id: int, limit: int, order: Literal["ASC", "DESC"]
    ) -> list[QueuedSample]:
        cursor = self.conn.execute(
            "SELECT id, product_key, device_key, ts_ms, points FROM samples"
            f" WHERE id > ? AND held_boot IS NULL ORDER BY id {order} LIMIT ?",
            (after_id, limit),
        )
        rows = list(map(QueuedSample._make, cursor))
        if rows:  # the highest id handed out: first or last, by the order
            self.note_seen(max(rows[0].id, rows[-1].id))
        return rows

    def next_id_excluding(self, after_id: int, excluded: set[tuple[str, str]]) -> int | None:
        """The first row id past `after_id` of a device not in `excluded`, by index seeks only.

        Walks the distinct devices of the queue through the device index (one seek each) and
        asks each eligible one for its first row past `after_id` (one seek each): a few
        milliseconds for a thousand devices, however many rows of excluded devices lie between.
        """
        best: int | None = None
        key: tuple[str, str] | None = self._first_device()
        while key is not None:
            if key not in excluded:
                row = self.conn.execute(
                    "SELECT min(id) FROM samples INDEXED BY samples_device"
                    " WHERE product_key = ? AND device_key = ? AND id > ? AND held_boot IS NULL",
                    (*key, after_id),
                ).fetchone()
                if row[0] is not None and (best is None or row[0] < best):
                    best = int(row[0])
            key = self._next_device(key)
        return best

    def _first_device(self) -> tuple[str, str] | None:
        row = self.conn.execute(
            "SELECT product_key, device_key FROM samples INDEXED BY samples_device"
            " ORDER BY product_key, device_key LIMIT 1"
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def _next_device(self, key: tuple[str, str]) -> tuple[str, str] | None:
        row = self.conn.execute(
            "SELECT product_key, device_key FROM samples INDEXED BY samples_device"
            " WHERE (product_key, device_key) > (?, ?) ORDER BY product_key, device_key LIMIT 1",
            key,
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def figures(self) -> tuple[int, int | None, float, int]:
        """(pending, oldest ts_ms, mean points of the newest 1,000, purged) from the id
        index's ends; `purged` is the counter `gatewayd queue purge` adds to.

        Pending is max(id) - min(id) + 1 (O(1)) past EXACT_COUNT_MAX; below it, the rows are
        counted. The span counts rows that left the middle: live readings sent and deleted
        during a drain, ahead of the backlog (10 meters for 40 s: 400 rows, 0.8 s of a 1 Mbit/s
        drain's ETA, a 20 % error 4 s from its end). Counting is exact where that error is
        large (a small queue) and costs ~1 ms per 100,000 rows. min and max are asked apart:
        SQLite answers a lone min() or max() from the end of the index, but
        `SELECT min(id), max(id)` walks every row (255 ms at 1 M rows, on the writer thread).
        """
        row = self.conn.execute("SELECT value FROM state WHERE key = 'purged'").fetchone()
        purged = int(row[0]) if row is not None and row[0] is not None else 0
        row = self.conn.execute("SELECT id, ts_ms FROM samples ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return 0, None, 0.0, purged
        low, oldest = row
        high = self.conn.execute("SELECT max(id) FROM samples").fetchone()[0]
        pending = int(high - low + 1)
        if pending <= EXACT_COUNT_MAX:
            pending = self.conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        mean = self.conn.execute(
            "SELECT avg(n_points) FROM (SELECT n_points FROM samples ORDER BY id DESC LIMIT 1000)"
        ).fetchone()[0]
        return pending, int(oldest), float(mean or 0.0), purged
