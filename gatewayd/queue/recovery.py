"""What the writer does when SQLite says the file is damaged, or the disk is full.

Mixed into SampleQueue (queue/writer.py): every Store call goes through `_on_store` on the
writer thread. Damage: the file is kept aside, a fresh queue takes over at once and the readable
rows are salvaged into it in the background (queue/salvage.py). A full disk: the WAL is emptied
into the file and, for a delete of confirmed rows, the reserve is given up (queue/reserve.py);
while writes still fail, new readings wait in memory, the newest `memory_buffer_samples`.
Readings lost on the way (unreadable in a damaged file, dropped from memory) are counted, and
told to `losses` (gatewayd/losses.py: report by exception must not count on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gatewayd.config import QueueConfig
from gatewayd.errors import QueueError
from gatewayd.losses import Losses
from gatewayd.model import Sample
from gatewayd.queue.reserve import DiskReserve
from gatewayd.queue.salvage import Salvage, describe, is_corruption, is_disk_full
from gatewayd.queue.schema import quarantine, whole_file_problem
from gatewayd.queue.store import Store

log = logging.getLogger("gatewayd.queue.writer")

T = TypeVar("T")

#: Store calls that free space: on a full disk they may use the reserve.
FREES_SPACE = {"ack", "reject"}


class DamageAndFullDisk:
    """The recovering half of SampleQueue; the attributes below are SampleQueue's."""

    path: Path
    cfg: QueueConfig
    reserve: DiskReserve
    losses: Losses
    new_data: asyncio.Event
    _buffer: list[Sample]
    _confirmed: set[int]
    write_failing: bool
    dropped_in_memory: int
    lost_at_stop: int
    _lost_recorded: int
    _store: Store | None
    _loop: asyncio.AbstractEventLoop | None
    _salvage_task: asyncio.Task[None] | None
    _check_task: asyncio.Task[None] | None
    #: A damaged file kept aside whose fresh successor is not open yet, and its highest id seen.
    _kept_pending: Path | None = None
    #: The queue could not be opened at the start (a full disk): opened at the next call.
    _open_pending: bool = False
    _seen_pending: int = 0

    @property
    def store(self) -> Store:
        raise NotImplementedError

    def _open_store(self, replaced: bool = False) -> Store:
        raise NotImplementedError

    def _after_open(self) -> None:
        raise NotImplementedError

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    async def _call(self, name: str, *args: Any) -> Any:
        raise NotImplementedError

    def _on_store(self, store: Store | None, name: str, *args: Any) -> Any:
        """Call a Store method; if SQLite finds the file damaged, switch to a fresh file and retry.

        Runs on the writer thread, so nothing else touches the store while it is replaced.
        `store` is the store when the call was queued: close() may have let go of it since.
        """
        if self._store is None and self._open_pending:
            self._store = self._open_store()  # deferred at the start: a full disk
            self._open_pending = False
            self._after_open()
        if self._store is None and self._kept_pending is not None:
            self._open_fresh()  # the fresh queue could not be opened last time (a full disk)
        if self._store is not None:
            store = self._store  # replaced (damage) since the call was queued: the fresh one
        if store is None:
            raise QueueError("queue is not open")
        try:
            return getattr(store, name)(*args)
        except sqlite3.DatabaseError as exc:
            if is_disk_full(exc):
                return self._retry_on_full_disk(store, name, *args)
            if not is_corruption(exc):
                raise
            self._replace_damaged(store, str(exc))
            return getattr(self.store, name)(*args)

    async def _lose_at_stop(self, exc: QueueError) -> None:
        """The disk still refuses the last group at a stop: count and say what memory held."""
        self.lost_at_stop = len(self._buffer)
        self._buffer.clear()
        recorded = "recorded in lost_disk"
        self.dropped_in_memory += self.lost_at_stop
        self.losses.lost("lost_at_stop", self.lost_at_stop)
        try:
            await self._record_lost()
        except QueueError:
            recorded = "not recorded in the file: the disk refuses writes"
        log.error(
            "queue_lost_at_stop samples=%d lost_while_failing=%d error=%r note='%s'",
            self.lost_at_stop,
            self.dropped_in_memory - self.lost_at_stop,
            str(exc),
            recorded,
        )
        if self._confirmed:
            log.warning(
                "queue_confirmed_not_deleted samples=%d note='the hub has them; they stay"
                " queued and are sent again after the restart (at least once)'",
                len(self._confirmed),
            )

    async def _record_lost(self) -> None:
        """Add the samples dropped from memory since the last record to `lost_disk`."""
        new = self.dropped_in_memory - self._lost_recorded
        if new:
            await self._call("count_lost", "lost_disk", new)
            self._lost_recorded += new

    def _write_failed(self, exc: QueueError) -> None:
        """The disk refused a group: keep the newest samples in memory, drop (count) the rest."""
        excess = len(self._buffer) - self.cfg.memory_buffer_samples
        if excess > 0:
            del self._buffer[:excess]
            self.dropped_in_memory += excess
            self.losses.lost("dropped_in_memory", excess)
        if not self.write_failing:
            self.write_failing = True
            log.error(
                "queue_write_failed error=%r action='keeping the newest %d samples in memory'",
                str(exc),
                self.cfg.memory_buffer_samples,
            )

    def _retry_on_full_disk(self, store: Store, name: str, *args: Any) -> Any:
        """A full disk: empty the WAL into the file and try again; a delete may use the reserve.

        The WAL holds committed pages the main file has not taken yet; once they are copied
        back and the WAL truncated, its blocks are free. If that is not enough for a delete of
        confirmed rows, the reserve is given up so the delete, and with it progress, can happen.
        """
        store.checkpoint()
        try:
            return getattr(store, name)(*args)
        except sqlite3.DatabaseError as exc:
            if not (is_disk_full(exc) and name in FREES_SPACE and self.reserve.release()):
                raise
        store.checkpoint()
        return getattr(store, name)(*args)

    def _replace_damaged(self, damaged: Store, problem: str) -> None:
        """Keep the damaged file aside, go on in a fresh one, salvage in the background."""
        if self._store is not damaged:
            return  # already replaced
        with contextlib.suppress(sqlite3.Error):
            damaged.conn.close()
        self._kept_pending = quarantine(self.path, problem)
        self._seen_pending = damaged.max_id_seen
        self._store = None
        self._open_fresh()

    def _open_fresh(self) -> None:
        """The fresh queue after damage; if it cannot be made now (a full disk), the next call
        tries again, and until then writes fail and readings wait in memory (counted)."""
        assert self._kept_pending is not None
        fresh = self._open_store(replaced=True)
        fresh.max_id_seen = self._seen_pending
        try:
            fresh.begin_salvage(self._kept_pending)
        except sqlite3.Error:
            fresh.conn.close()
            raise
        self._store, self._kept_pending = fresh, None
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._start_salvage)

    async def _check_whole_file(self, store: Store) -> None:
        """Read every page once, in the background, after the start (SQLite's quick_check).

        The probe at open reads only both ends of the queue, so that polling starts at once;
        damage in the middle is found here within seconds (307 ms for 1 M samples, 66 MB, from
        the page cache; a cold SD card reads ~20-50 MB/s) instead of when the drain meets it.
        """
        problem = await asyncio.to_thread(whole_file_problem, self.path)
        if problem is not None:
            await self._run(self._replace_damaged, store, problem)

    async def wait_checked(self) -> None:
        """Wait for the background check of the whole file (tests)."""
        if self._check_task is not None:
            await asyncio.shield(self._check_task)

    def _start_salvage(self) -> None:
        if self._salvage_task is None or self._salvage_task.done():
            self._salvage_task = asyncio.get_running_loop().create_task(self._salvage())

    def salvage_pending(self) -> bool:
        return self._salvage_task is not None and not self._salvage_task.done()

    async def wait_salvaged(self) -> None:
        """Wait for a running salvage to finish (tests, and a stop that may wait)."""
        if self._salvage_task is not None:
            await asyncio.shield(self._salvage_task)

    async def _salvage(self) -> None:
        pending = await self._call("pending_salvage")
        if pending is None:
            return
        kept, start_id = pending
        started = time.monotonic()
        try:
            salvage = await asyncio.to_thread(Salvage, kept, start_id)
        except (QueueError, sqlite3.Error) as exc:
            log.error(
                "queue_salvage_failed from=%s error=%r note='the file is kept'", kept, str(exc)
            )
            return
        try:
            salvaged = 0
            while (chunk := await asyncio.to_thread(salvage.next_samples)) is not None:
                rows, next_id = chunk
                salvaged += await self._call("insert_salvaged", rows, next_id)
                if rows:
                    self.new_data.set()
            rejected, lost_rejected = await asyncio.to_thread(salvage.rejected)
            lost = salvage.samples.unreadable_ids
            await self._call("finish_salvage", rejected, lost, lost_rejected)
            self.losses.lost("damaged", lost)
        except (QueueError, sqlite3.Error) as exc:
            log.error(
                "queue_salvage_failed from=%s error=%r note='resumed at the next start'",
                kept,
                str(exc),
            )
            return
        finally:
            salvage.close()
        log.warning(
            "queue_salvaged from=%s samples=%d lost=%d unreadable_ids=%r dead_letters=%d"
            " lost_dead_letters=%d seconds=%.1f",
            kept,
            salvaged,
            lost,
            describe(salvage.samples.unreadable),
            len(rejected),
            lost_rejected,
            time.monotonic() - started,
        )
