"""The daemon's handle on the queue: one writer thread, group commits, a memory buffer.

One worker thread owns the write connection (SQLite connections are not shared across threads, and
the event loop must never wait on an fsync). New samples are buffered on the event loop and
committed in groups every `commit_interval_ms`, which bounds fsyncs on flash storage and bounds
what a crash can lose to one open group. Readers such as the CLI open their own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gatewayd.clocks import now_ms
from gatewayd.config import QueueConfig
from gatewayd.errors import QueueError
from gatewayd.losses import DeviceKey, Losses
from gatewayd.model import QueuedSample, Sample
from gatewayd.queue.recovery import DamageAndFullDisk
from gatewayd.queue.reserve import DiskReserve, reserve_bytes
from gatewayd.queue.store import Store, open_store
from gatewayd.runtime.watchdog import Pulse

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A group this large is committed at once rather than at the next commit tick.
GROUP_MAX_SAMPLES = 2000


class SampleQueue(DamageAndFullDisk):
    """The daemon's handle on the queue: async methods that run on the single writer thread."""

    def __init__(
        self,
        cfg: QueueConfig,
        *,
        check_at_start: bool = True,
        age_clock: Callable[[], int | None] = now_ms,
        enqueue_clock: Callable[[], int] = now_ms,
        resume_clock: Callable[[int | None], None] | None = None,
    ) -> None:
        self.cfg = cfg
        #: The times rows are queued and aged by (ClockGuard.queue_now_ms / age_now_ms: no
        #: step within a run; age None while the clock is untrusted: no age eviction then).
        self.age_clock = age_clock
        self.enqueue_clock = enqueue_clock
        self.resume_clock = resume_clock  # told where the queue's clock stood in the file
        self.check_at_start = check_at_start  # read every page in the background after open
        self.path = Path(cfg.path)
        self._executor: ThreadPoolExecutor | None = None
        self._store: Store | None = None
        self._buffer: list[Sample] = []
        #: Set whenever a group of new samples has been committed; the forwarder waits on it.
        self.new_data = asyncio.Event()
        self._group_full = asyncio.Event()
        self.evicted = 0  # by the bounds, since start
        #: Every reading lost after it was put (evicted, dropped, dead-lettered, purged).
        self.losses = Losses()
        self.write_failing = False
        self.dropped_in_memory = 0  # samples lost because the disk refused writes for too long
        #: Beats every commit round; a writer thread stuck on the disk stops it (watchdog.py).
        self.pulse = Pulse("queue-writer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._salvage_task: asyncio.Task[None] | None = None
        self._check_task: asyncio.Task[None] | None = None
        self.reserve = DiskReserve(self.path, reserve_bytes(cfg.max_bytes))
        #: Ids the hub confirmed whose delete the disk refused: never handed out again.
        self._confirmed: set[int] = set()
        self._lost_recorded = 0  # of dropped_in_memory, how many are counted in the file
        self.lost_at_stop = 0  # samples in memory when a stop found the disk still refusing

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatewayd-db")
        try:
            self._store = await self._run(self._open_store)
        except QueueError as exc:
            if not await self._run(self.reserve.disk_full):
                await self._abandon_open()
                raise
            # A full disk and no reserve left: start anyway, readings wait in memory (bounded,
            # counted) and every commit tries to open the queue again (recovery._on_store).
            self._open_pending = True
            log.error(
                "queue_open_deferred error=%r note='disk full: readings wait in memory until"
                " there is room'",
                str(exc),
            )
            return
        except BaseException:
            await self._abandon_open()
            raise
        await self._run(self._after_open)
        if self.check_at_start:
            self._check_task = asyncio.create_task(self._check_whole_file(self.store))

    async def _abandon_open(self) -> None:
        assert self._executor is not None
        self._executor.shutdown(wait=True)
        self._executor = None

    def _after_open(self) -> None:
        """On the writer thread, once the file is open: clock, salvage, reserve, WAL size."""
        assert self._loop is not None
        if self.resume_clock is not None:
            self.resume_clock(self.store.queue_clock())
        # A file found damaged at the start, or a salvage left unfinished.
        self._loop.call_soon_threadsafe(self._start_salvage)
        self.reserve.ensure()
        # What the WAL holds beyond the file must fit in the reserve, or a checkpoint on a full
        # disk (which grows the file by those pages) could never run: checkpoint at half of it.
        self.store.limit_wal(self.reserve.size // 2)

    def _open_store(self, replaced: bool = False) -> Store:
        """Open the file; on a full disk (a restart after a crash while full) use the reserve."""
        try:
            store = open_store(
                self.path, self.cfg.synchronous, self.cfg.max_bytes, self.cfg, replaced=replaced
            )
        except (QueueError, sqlite3.Error) as exc:
            if not (self.reserve.disk_full() and self.reserve.release()):
                raise
            log.warning("queue_open_on_full_disk error=%r action='gave up the reserve'", str(exc))
            store = open_store(
                self.path, self.cfg.synchronous, self.cfg.max_bytes, self.cfg, replaced=replaced
            )
        store.age_clock = self.age_clock
        store.enqueue_clock = self.enqueue_clock
        return store

    async def close(self) -> None:
        """Commit what is buffered, then close the connection and stop the writer thread."""
        if self._executor is None:
            return
        for task in (self._check_task, self._salvage_task):
            if task is not None:  # a salvage resumes at the next start from where it stopped
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await self.flush()
        except QueueError as exc:
            await self._lose_at_stop(exc)
        finally:
            store, self._store = self._store, None
            if store is not None:
                await self._run(store.conn.close)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise QueueError("queue is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise QueueError(f"queue {self.path}: {exc}") from exc

    async def _call(self, name: str, *args: Any) -> Any:
        """Run Store.`name` on the writer thread (see _on_store)."""
        return await self._run(self._on_store, self._store, name, *args)

    @property
    def store(self) -> Store:
        if self._store is None:
            raise QueueError("queue is not open")
        return self._store

    def put(self, sample: Sample) -> None:
        """Buffer a sample for the next group commit; never blocks the caller."""
        self._buffer.append(sample)
        if len(self._buffer) >= GROUP_MAX_SAMPLES:
            self._group_full.set()  # a large group is committed now, not at the next tick

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def flush(self) -> int:
        """Commit the buffered samples as one transaction; returns how many were committed.

        If the disk refuses the write (full, read-only), the samples stay buffered, the newest
        `memory_buffer_samples` of them, and the next flush tries again.
        """
        if not self._buffer:
            return 0
        group, self._buffer = self._buffer, []
        if self._executor is None:
            self._buffer[:0] = group
            raise QueueError("queue is not open")
        insert = asyncio.get_running_loop().run_in_executor(
            self._executor, self._on_store, self._store, "insert", group
        )
        try:
            # Shielded: a cancelled flush (a stop) must not lose a group that is being written.
            evicted = await asyncio.shield(insert)
        except asyncio.CancelledError:
            insert.add_done_callback(lambda done: self._restore_if_failed(done, group))
            raise
        except (sqlite3.Error, QueueError) as exc:  # QueueError: no fresh queue after damage yet
            self._buffer[:0] = group  # keep them for the next try, in order
            error = exc if isinstance(exc, QueueError) else QueueError(f"queue {self.path}: {exc}")
            self._write_failed(error)
            raise error from exc
        self.evicted += evicted
        self.losses.lost("evicted", evicted)
        if self.write_failing:
            self.write_failing = False
            log.warning("queue_writes_recovered lost_while_failing=%d", self.dropped_in_memory)
            await self._record_lost()
        self.new_data.set()
        return len(group)

    def _restore_if_failed(self, done: asyncio.Future[int], group: list[Sample]) -> None:
        if done.cancelled() or done.exception() is not None:
            self._buffer[:0] = group  # close() commits it

    async def run_committer(self) -> None:
        """Group-commit loop; runs until cancelled (the final flush happens in close())."""
        interval = self.cfg.commit_interval_ms / 1000
        while True:
            self.pulse.beat()
            with contextlib.suppress(TimeoutError), self.pulse.idle():
                async with asyncio.timeout(interval):
                    await self._group_full.wait()
            self._group_full.clear()
            with contextlib.suppress(QueueError):  # logged once per episode by flush()
                await self.flush()

    async def fetch_after(self, after_id: int, limit: int) -> list[QueuedSample]:
        return self._unconfirmed(await self._call("fetch_after", after_id, limit))

    async def fetch_newest(self, after_id: int, limit: int) -> list[QueuedSample]:
        return self._unconfirmed(await self._call("fetch_newest", after_id, limit))

    async def next_id_excluding(self, after_id: int, excluded: set[tuple[str, str]]) -> int | None:
        return await self._run(self.store.next_id_excluding, after_id, set(excluded))

    async def ack(self, ids: list[int]) -> int:
        """Delete confirmed rows; if the disk refuses even that, remember them (never re-sent).

        Returns how many rows were deleted now (earlier remembered ones included).
        """
        self._confirmed.update(ids)
        try:
            deleted: int = await self._call("ack", sorted(self._confirmed))
        except QueueError as exc:
            log.error(
                "queue_ack_failed error=%r confirmed_waiting=%d note='kept in memory, not re-sent'",
                str(exc),
                len(self._confirmed),
            )
            return 0
        self._confirmed.clear()
        if not self.reserve.held:
            await self._run(self._restore_reserve)
        return deleted

    def _restore_reserve(self) -> None:
        self.store.give_back_pages(3 * self.reserve.size)
        if self.reserve.ensure():
            log.info(
                "queue_reserve_restored path=%s bytes=%d", self.reserve.path, self.reserve.size
            )

    def _unconfirmed(self, rows: list[QueuedSample]) -> list[QueuedSample]:
        if not self._confirmed:
            return rows
        return [row for row in rows if row.id not in self._confirmed]

    async def reject(
        self, ids: list[int], code: int, message: str, devices: set[DeviceKey] | None = None
    ) -> int:
        """Dead-letter rows; `devices`: the devices they are of, if known (gatewayd/losses.py)."""
        moved: int = await self._call("reject", ids, code, message)
        self.losses.lost("rejected", moved, devices)
        return moved

    async def record_failure(self, ids: list[int], code: int | None) -> None:
        await self._call("record_failure", ids, code)

    async def figures(self) -> tuple[int, int | None, float]:
        """Health figures in one trip to the writer thread (which proves it is not stuck);
        a rise of `purged` since the last trip is a `gatewayd queue purge` meanwhile."""
        pending, oldest, mean, purged = await self._call("figures")
        self.losses.total("purged", purged)
        return pending, oldest, mean

    async def restamp(self, boot: str, offset_ms: int) -> int:
        return await self._call("restamp", boot, offset_ms)

    async def release_other_boots(self, boot: str, policy: str) -> int:
        released: int = await self._call("release_other_boots", boot, policy)
        if policy == "reject":
            self.losses.lost("rejected", released)
        return released

    async def set_state(self, **values: Any) -> None:
        await self._call("set_state", values)
