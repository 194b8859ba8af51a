"""Room kept on the queue's disk for the day it fills: so that confirmed rows can still be deleted.

On a full disk SQLite cannot delete either: a delete is written to the WAL first. A queue that
cannot delete what the hub confirmed cannot free the pages new readings need, and re-sends the
same rows for ever. So the queue owns a reserve file next to it, written out at open, and gives it
up the moment a delete meets a full disk; it is written again once the disk has room.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 64 << 10
#: A disk with less room than this is full for the queue (no group commit would fit).
FULL_BELOW = 256 << 10


def reserve_bytes(max_bytes: int) -> int:
    """1/64 of the bound, from 1 MiB up to 16 MiB (and at most 1/8 of the disk: ensure()).

    It must hold what the WAL keeps beyond the file (the WAL is checkpointed at half the
    reserve) plus a delete of confirmed rows.
    """
    return min(16 << 20, max(1 << 20, max_bytes // 64))


class DiskReserve:
    """A file of `size` zero bytes next to the queue, ours to give up (at most 1/8 of the disk)."""

    def __init__(self, queue_path: Path, size: int) -> None:
        self.path = queue_path.with_name(queue_path.name + ".reserve")
        self.size = size

    @property
    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    def ensure(self) -> bool:
        """Write the reserve if it is missing and the disk has room for it twice over."""
        if self.held:
            return True
        stat = os.statvfs(self.path.parent)
        self.size = min(self.size, stat.f_blocks * stat.f_frsize // 8)  # a small disk: 1/8 of it
        if stat.f_bavail * stat.f_frsize < 2 * self.size:
            return False
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                zeros = bytes(CHUNK)
                for _ in range(0, self.size, CHUNK):  # real blocks, not a hole
                    os.write(fd, zeros)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            log.warning("queue_reserve_unavailable path=%s error=%r", self.path, str(exc))
            return False
        return True

    def disk_full(self) -> bool:
        """The queue's disk is writable and (all but) full: less than 256 KiB left."""
        try:
            stat = os.statvfs(self.path.parent)
        except OSError:
            return False
        writable = not stat.f_flag & os.ST_RDONLY and os.access(self.path.parent, os.W_OK)
        return writable and stat.f_bavail * stat.f_frsize < FULL_BELOW

    def release(self) -> bool:
        """Give the reserve's blocks back to the disk; False if there was none."""
        try:
            self.path.unlink()
        except OSError:  # none, or a read-only file system
            return False
        log.warning(
            "queue_reserve_released path=%s bytes=%d reason='disk full: deleting confirmed rows'",
            self.path,
            self.size,
        )
        return True


class SpaceKeeper:
    """Store's side of a full disk: a WAL that fits in the reserve, and pages handed back."""

    conn: sqlite3.Connection

    def limit_wal(self, max_wal_bytes: int) -> None:
        """Checkpoint automatically once the WAL holds `max_wal_bytes` (or less: connect())."""
        page = self.conn.execute("PRAGMA page_size").fetchone()[0]
        current = self.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        pages = max(16, min(current, max_wal_bytes // page))
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")

    def checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it (best effort: a full disk may refuse)."""
        with contextlib.suppress(sqlite3.OperationalError):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def give_back_pages(self, keep_free_bytes: int) -> None:
        """Hand free pages beyond `keep_free_bytes` back to the file system (for the reserve)."""
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        page = self.conn.execute("PRAGMA page_size").fetchone()[0]
        surplus = free - keep_free_bytes // page
        if surplus > 0:
            list(self.conn.execute(f"PRAGMA incremental_vacuum({surplus})"))
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
