"""Readings held while the wall clock was not trusted: re-stamped, or released (acquire/clock.py)."""

from __future__ import annotations

import sqlite3

from gatewayd.queue.sql import atomic


class HeldRows:
    """Store's SQL for held readings (columns held_boot, held_mono_ms)."""

    conn: sqlite3.Connection

    def reject(self, ids: list[int], code: int, message: str) -> int:
        raise NotImplementedError

    def restamp(self, boot: str, offset_ms: int) -> int:
        """Give held readings of this boot their wall time (monotonic + offset); release them."""
        with atomic(self.conn):
            return int(
                self.conn.execute(
                    "UPDATE samples SET ts_ms = held_mono_ms + ?, held_boot = NULL,"
                    " held_mono_ms = NULL WHERE held_boot = ?",
                    (offset_ms, boot),
                ).rowcount
            )

    def release_other_boots(self, boot: str, policy: str) -> int:
        """Held readings of an earlier boot cannot be re-stamped: send as stamped, or reject."""
        if policy == "reject":
            ids = [
                row[0]
                for row in self.conn.execute(
                    "SELECT id FROM samples WHERE held_boot IS NOT NULL AND held_boot != ?", (boot,)
                )
            ]
            return self.reject(ids, 0, "taken before the wall clock was trusted") if ids else 0
        with atomic(self.conn):
            return int(
                self.conn.execute(
                    "UPDATE samples SET held_boot = NULL, held_mono_ms = NULL"
                    " WHERE held_boot IS NOT NULL AND held_boot != ?",
                    (boot,),
                ).rowcount
            )

    def queue_clock(self) -> int | None:
        """Where the queue's clock stood at the last group commit (None: never noted)."""
        row = self.conn.execute("SELECT value FROM state WHERE key = 'queue_clock_ms'").fetchone()
        return None if row is None or row[0] is None else int(row[0])
