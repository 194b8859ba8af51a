"""The durable queue between acquisition and uplink: one SQLite file in WAL mode.

Every reading is committed here before anything is sent, and a row leaves `samples` only on a 200
reply naming its request, eviction by the bounds, a move to `rejected`, or an operator's purge.

One worker thread owns the write connection (SQLite connections are not shared across threads, and
the event loop must never wait on an fsync). New samples are buffered on the event loop and
committed in groups every `commit_interval_ms`, which bounds fsyncs on flash storage and bounds
what a crash can lose to one open group. Readers such as the CLI open their own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
from sqlite_utils.migrations import Migrations

from gatewayd.config import QueueConfig
from gatewayd.errors import QueueError
from gatewayd.model import QueuedSample, Sample

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS = Migrations("gatewayd")
SCHEMA_VERSION = 4
#: A group this large is committed at once rather than at the next commit tick.
GROUP_MAX_SAMPLES = 2000
COUNTERS = ("polled", "queued", "sent", "evicted", "rejected", "retried")


@MIGRATIONS(name="0001_initial")
def _m0001_initial(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE samples (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the forwarder's cursor relies on it
            product_key TEXT NOT NULL,
            device_key TEXT NOT NULL,
            ts_ms INTEGER NOT NULL,
            points TEXT NOT NULL,                  -- JSON object, exactly as sent
            n_points INTEGER NOT NULL,
            enqueued_ms INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE rejected (
            id INTEGER PRIMARY KEY,
            product_key TEXT NOT NULL,
            device_key TEXT NOT NULL,
            ts_ms INTEGER NOT NULL,
            points TEXT NOT NULL,
            n_points INTEGER NOT NULL,
            enqueued_ms INTEGER NOT NULL,
            attempts INTEGER NOT NULL,
            code INTEGER NOT NULL,
            message TEXT NOT NULL,
            rejected_ms INTEGER NOT NULL
        );
        CREATE TABLE state (key TEXT PRIMARY KEY, value);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value);
        """
    )
    db.execute("INSERT INTO state (key, value) VALUES " + ",".join(f"('{c}', 0)" for c in COUNTERS))


@MIGRATIONS(name="0002_held_samples")
def _m0002_held_samples(db: sqlite_utils.Database) -> None:
    """Readings taken while the wall clock was not trusted wait here to be re-stamped."""
    db.execute("ALTER TABLE samples ADD COLUMN held_boot TEXT")
    db.execute("ALTER TABLE samples ADD COLUMN held_mono_ms INTEGER")


@MIGRATIONS(name="0003_held_index")
def _m0003_held_index(db: sqlite_utils.Database) -> None:
    """Finding held readings must not walk the whole queue at every start (bench/disk.py).

    Partial: normally no row is held, so the index is empty and inserts do not pay for it.
    """
    db.execute("CREATE INDEX samples_held ON samples (held_boot) WHERE held_boot IS NOT NULL")


@MIGRATIONS(name="0004_device_index")
def _m0004_device_index(db: sqlite_utils.Database) -> None:
    """Rows of a parked device must cost nothing to skip (forward/loop.py): this index finds a
    device's next row, and the next device, by seeking instead of reading every row between.
    Within one key the index is ordered by row id, which SQLite appends to every index entry."""
    db.execute("CREATE INDEX samples_device ON samples (product_key, device_key)")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _create_private(path: Path) -> None:
    """Create the file with mode 0600 before SQLite does: readings and keys are nobody else's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def connect(
    path: Path, *, synchronous: str = "full", readonly: bool = False, max_bytes: int = 0
) -> sqlite3.Connection:
    """Open a connection with the pragmas every gatewayd connection uses."""
    if readonly:
        if not path.exists():
            raise QueueError(f"no queue file at {path}")
        # On read-only media (an SD card remounted ro after errors) SQLite cannot create the
        # WAL index; nothing can be writing there, so the file is read as immutable.
        frozen = "&immutable=1" if not os.access(path.parent, os.W_OK) else ""
        uri = f"{path.absolute().as_uri()}?mode=ro{frozen}"  # as_uri escapes ? and #
        conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    else:
        _create_private(path)
        conn = sqlite3.connect(path, timeout=5.0)
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        # Freed pages are reused, and can be handed back with `queue vacuum` (set before any table).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        # Keep the WAL small next to the bound, so the file plus WAL stays within it.
        wal_limit = min(64 << 20, max(max_bytes // 16, 256 << 10)) if max_bytes else 64 << 20
        conn.execute(f"PRAGMA journal_size_limit = {wal_limit}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, wal_limit // 4096 // 2)}")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Apply pending numbered migrations; refuse a file written by a newer gatewayd."""
    db = sqlite_utils.Database(conn)
    known = {m.name for m in MIGRATIONS._migrations}
    unknown = [m.name for m in MIGRATIONS.applied(db) if m.name not in known]
    if unknown:
        raise QueueError(
            f"queue file has schema migrations this version does not know ({', '.join(unknown)}); "
            "it was written by a newer gatewayd"
        )
    MIGRATIONS.apply(db)
    with db.atomic():
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [SCHEMA_VERSION],
        )


def probe(conn: sqlite3.Connection) -> str | None:
    """None if the file looks sound, else what SQLite found wrong.

    Cheap on purpose: the header, the schema, and both ends of the queue (which a truncated or
    overwritten file fails). `PRAGMA quick_check` reads every page: seconds for a 10 M-sample
    queue on a gateway's flash before the first poll, at every start (bench/disk.py).
    """
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        for table in ("samples", "rejected"):
            if table in names:
                # Rows are appended: the newest sit on the last pages, which a cut file lacks.
                conn.execute(f"SELECT * FROM {table} ORDER BY id DESC LIMIT 50").fetchall()
                conn.execute(f"SELECT * FROM {table} ORDER BY id LIMIT 50").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None


def move_aside(path: Path) -> Path:
    """Keep a corrupt file (and its WAL) under a name with the time, so nothing is thrown away."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(Path(f"{target}{suffix}"))
    return target


#: What SQLite says when a file is damaged or not a database at all (the only cases where a
#: file is moved aside; a file we may not write is the operator's to fix, never "corrupt").
CORRUPTION = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


def _refuse_unwritable(path: Path) -> None:
    """A queue gatewayd cannot write would silently turn it into a gateway that forgets."""
    for target in (path, path.parent):
        if target.exists() and not os.access(target, os.W_OK):
            raise QueueError(
                f"queue {path}: {'file' if target == path else 'directory'} {target} is not "
                "writable (read-only file or file system?); gatewayd needs to write the queue "
                "and its -wal/-shm files next to it. Nothing was changed."
            )


def open_store(
    path: Path, synchronous: str, max_bytes: int, cfg: QueueConfig | None = None
) -> Store:
    """Open (or create) the queue; a corrupt file is moved aside and a fresh queue started.

    A file that cannot be written (permissions, a read-only mount) is refused with QueueError
    and left exactly as it was: it is not corrupt, and its readings must still be sent.
    """
    _refuse_unwritable(path)
    conn = None
    try:
        conn = connect(path, synchronous=synchronous, max_bytes=max_bytes)
        problem = probe(conn)
    except OSError as exc:
        raise QueueError(f"cannot create queue {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        if getattr(exc, "sqlite_errorname", "") not in CORRUPTION:
            raise QueueError(f"cannot open queue {path}: {exc}") from None
        problem = str(exc)
    if problem is not None:
        if conn is not None:
            conn.close()
        kept = move_aside(path)
        log.critical(
            "queue_corrupt path=%s problem=%r kept_as=%s action='started a fresh queue'",
            path,
            problem,
            kept,
        )
        conn = connect(path, synchronous=synchronous, max_bytes=max_bytes)
    assert conn is not None
    try:
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise QueueError(f"cannot prepare queue {path}: {exc}") from None
    except QueueError:
        conn.close()
        raise
    return Store(conn, cfg)


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


class Store:
    """Synchronous queue operations on one connection; used from exactly one thread."""

    def __init__(self, conn: sqlite3.Connection, cfg: QueueConfig | None = None) -> None:
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self.bounds = Bounds(cfg.max_bytes, cfg.max_age_s, cfg.overflow) if cfg else None
        self.evicting = False  # inside an episode of eviction (logged once per episode)
        self.episode_evicted = 0

    def used_bytes(self) -> int:
        """Bytes of the database in use (pages not on the free list)."""
        pages, free, size = (
            self.conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
        return int((pages - free) * size)

    def insert(self, samples: list[Sample], clock_ms: int | None = None) -> int:
        """Commit a group; returns how many samples the bounds evicted (or refused)."""
        enqueued = clock_ms if clock_ms is not None else now_ms()
        with self.db.atomic():
            evicted = 0
            bounds = self.bounds
            if (
                bounds
                and bounds.overflow == "drop_newest"
                and self.used_bytes() >= bounds.data_budget
            ):
                evicted = len(samples)
                samples = []
            self._insert_rows(samples, enqueued)
            if bounds:
                evicted += self._evict_old(enqueued - bounds.max_age_s * 1000)
                if bounds.overflow == "drop_oldest":
                    evicted += self._evict_to_budget(bounds.data_budget, max(64, len(samples)))
                self._bump("evicted", evicted)
        self._episode(evicted)
        return evicted

    def _evict_old(self, cutoff_ms: int) -> int:
        """Evict samples older than the age bound, looking only at the head of the queue."""
        cursor = self.conn.execute(
            "DELETE FROM samples WHERE id IN (SELECT id FROM samples ORDER BY id LIMIT 1000)"
            " AND ts_ms < ? AND held_boot IS NULL",
            (cutoff_ms,),
        )
        return cursor.rowcount

    def _evict_to_budget(self, budget: int, chunk: int) -> int:
        evicted = 0
        while self.used_bytes() > budget:
            cursor = self.conn.execute(
                "DELETE FROM samples WHERE id IN (SELECT id FROM samples ORDER BY id LIMIT ?)",
                (chunk,),
            )
            if cursor.rowcount == 0:
                break
            evicted += cursor.rowcount
        return evicted

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

    def _insert_rows(self, samples: list[Sample], enqueued: int) -> None:
        rows = []
        for s in samples:
            points = json.dumps(s.points, separators=(",", ":"), allow_nan=False)
            rows.append(
                (
                    s.product_key,
                    s.device_key,
                    s.ts_ms,
                    points,
                    len(s.points),
                    enqueued,
                    s.held_boot,
                    s.mono_ms if s.held_boot else None,
                )
            )
        self.conn.executemany(
            "INSERT INTO samples (product_key, device_key, ts_ms, points, n_points, enqueued_ms,"
            " held_boot, held_mono_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._bump("queued", len(rows))
        self._bump("polled", len(rows))

    def fetch_after(self, after_id: int, limit: int) -> list[QueuedSample]:
        cursor = self.conn.execute(
            "SELECT id, product_key, device_key, ts_ms, points FROM samples"
            " WHERE id > ? AND held_boot IS NULL ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return list(map(QueuedSample._make, cursor))

    def fetch_newest(self, after_id: int, limit: int) -> list[QueuedSample]:
        """The newest rows past `after_id`, newest first (a cheap scan from the end)."""
        cursor = self.conn.execute(
            "SELECT id, product_key, device_key, ts_ms, points FROM samples"
            " WHERE id > ? AND held_boot IS NULL ORDER BY id DESC LIMIT ?",
            (after_id, limit),
        )
        return list(map(QueuedSample._make, cursor))

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

    def reject(self, ids: list[int], code: int, message: str) -> int:
        """Move rows the hub refused for their content into the dead-letter table."""
        with self.db.atomic():
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
            self._set_many({"last_reply_code": code, "last_reply_ms": now_ms()})
        return moved

    def ack(self, ids: list[int]) -> int:
        """Delete the rows a 200 reply confirmed; returns how many were still there."""
        with self.db.atomic():
            cursor = self.conn.execute(
                "DELETE FROM samples WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
            self._bump("sent", cursor.rowcount)
            self._set_many({"last_reply_code": 200, "last_reply_ms": now_ms()})
        return cursor.rowcount

    def record_failure(self, ids: list[int], code: int | None) -> None:
        """Count a failed attempt on rows that stay queued (no reply, or a non-200 code)."""
        with self.db.atomic():
            self.conn.execute(
                "UPDATE samples SET attempts = attempts + 1"
                " WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
            self._bump("retried", len(ids))
            if code is not None:
                self._set_many({"last_reply_code": code, "last_reply_ms": now_ms()})

    def restamp(self, boot: str, offset_ms: int) -> int:
        """Give held readings of this boot their wall time (monotonic + offset); release them."""
        with self.db.atomic():
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
        with self.db.atomic():
            return int(
                self.conn.execute(
                    "UPDATE samples SET held_boot = NULL, held_mono_ms = NULL"
                    " WHERE held_boot IS NOT NULL AND held_boot != ?",
                    (boot,),
                ).rowcount
            )

    def figures(self) -> tuple[int, int | None, float]:
        """(pending, oldest ts_ms, mean points of the newest 1,000) from the id index's ends.

        Pending is max(id) - min(id) + 1: O(1), exact unless rows left the middle. An exact
        count or points sum would scan the whole queue at every health tick. min and max are
        asked apart: SQLite answers a lone min() or max() from the end of the index, but
        `SELECT min(id), max(id)` walks every row (255 ms at 1 M rows, on the writer thread).
        """
        row = self.conn.execute("SELECT id, ts_ms FROM samples ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return 0, None, 0.0
        low, oldest = row
        high = self.conn.execute("SELECT max(id) FROM samples").fetchone()[0]
        mean = self.conn.execute(
            "SELECT avg(n_points) FROM (SELECT n_points FROM samples ORDER BY id DESC LIMIT 1000)"
        ).fetchone()[0]
        return int(high - low + 1), int(oldest), float(mean or 0.0)

    def set_state(self, values: dict[str, Any]) -> None:
        with self.db.atomic():
            self._set_many(values)

    def _bump(self, counter: str, n: int) -> None:
        self.conn.execute("UPDATE state SET value = value + ? WHERE key = ?", (n, counter))

    def _set_many(self, values: dict[str, Any]) -> None:
        self.conn.executemany(
            "INSERT INTO state (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )


@dataclass(frozen=True)
class QueueStats:
    """What `gatewayd queue stats` shows; read from the file, so it works while the daemon runs."""

    path: str
    pending_samples: int
    pending_points: int
    oldest_ts_ms: int | None
    newest_ts_ms: int | None
    file_bytes: int
    rejected: int
    state: dict[str, Any]


def file_bytes(path: Path) -> int:
    """The queue's size on disk: the database plus its WAL and shared-memory files."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


def read_stats(path: Path) -> QueueStats:
    """Open the file read-only and summarise it."""
    conn = connect(path, readonly=True)
    try:
        db = sqlite_utils.Database(conn)
        if "samples" not in db.table_names():
            raise QueueError(f"{path} is not a gatewayd queue (no samples table)")
        pending, points, oldest, newest = conn.execute(
            "SELECT count(*), coalesce(sum(n_points), 0), min(ts_ms), max(ts_ms) FROM samples"
        ).fetchone()
        rejected = conn.execute("SELECT count(*) FROM rejected").fetchone()[0]
        state = {row["key"]: row["value"] for row in db.query("SELECT key, value FROM state")}
    except sqlite3.DatabaseError as exc:
        raise QueueError(f"cannot read {path}: {exc}") from None
    finally:
        conn.close()
    return QueueStats(
        path=str(path),
        pending_samples=pending,
        pending_points=points,
        oldest_ts_ms=oldest,
        newest_ts_ms=newest,
        file_bytes=file_bytes(path),
        rejected=rejected,
        state=state,
    )


class SampleQueue:
    """The daemon's handle on the queue: async methods that run on the single writer thread."""

    def __init__(self, cfg: QueueConfig) -> None:
        self.cfg = cfg
        self.path = Path(cfg.path)
        self._executor: ThreadPoolExecutor | None = None
        self._store: Store | None = None
        self._buffer: list[Sample] = []
        #: Set whenever a group of new samples has been committed; the forwarder waits on it.
        self.new_data = asyncio.Event()
        self._group_full = asyncio.Event()
        self.evicted = 0  # by the bounds, since start
        self.write_failing = False
        self.dropped_in_memory = 0  # samples lost because the disk refused writes for too long

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatewayd-db")
        try:
            self._store = await self._run(self._open_store)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    def _open_store(self) -> Store:
        return open_store(self.path, self.cfg.synchronous, self.cfg.max_bytes, self.cfg)

    async def close(self) -> None:
        """Commit what is buffered, then close the connection and stop the writer thread."""
        if self._executor is None:
            return
        try:
            await self.flush()
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
            self._executor, self.store.insert, group
        )
        try:
            # Shielded: a cancelled flush (a stop) must not lose a group that is being written.
            self.evicted += await asyncio.shield(insert)
        except asyncio.CancelledError:
            insert.add_done_callback(lambda done: self._restore_if_failed(done, group))
            raise
        except sqlite3.Error as exc:
            self._buffer[:0] = group  # keep them for the next try, in order
            error = QueueError(f"queue {self.path}: {exc}")
            self._write_failed(error)
            raise error from exc
        if self.write_failing:
            self.write_failing = False
            log.warning("queue_writes_recovered lost_while_failing=%d", self.dropped_in_memory)
            await self._run(self.store.set_state, {"lost_disk": self.dropped_in_memory})
        self.new_data.set()
        return len(group)

    def _restore_if_failed(self, done: asyncio.Future[int], group: list[Sample]) -> None:
        if done.cancelled() or done.exception() is not None:
            self._buffer[:0] = group  # close() commits it

    def _write_failed(self, exc: QueueError) -> None:
        excess = len(self._buffer) - self.cfg.memory_buffer_samples
        if excess > 0:
            del self._buffer[:excess]
            self.dropped_in_memory += excess
        if not self.write_failing:
            self.write_failing = True
            log.error(
                "queue_write_failed error=%r action='keeping the newest %d samples in memory'",
                str(exc),
                self.cfg.memory_buffer_samples,
            )

    async def run_committer(self) -> None:
        """Group-commit loop; runs until cancelled (the final flush happens in close())."""
        interval = self.cfg.commit_interval_ms / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._group_full.wait()
            self._group_full.clear()
            with contextlib.suppress(QueueError):  # logged once per episode by flush()
                await self.flush()

    async def fetch_after(self, after_id: int, limit: int) -> list[QueuedSample]:
        return await self._run(self.store.fetch_after, after_id, limit)

    async def fetch_newest(self, after_id: int, limit: int) -> list[QueuedSample]:
        return await self._run(self.store.fetch_newest, after_id, limit)

    async def next_id_excluding(self, after_id: int, excluded: set[tuple[str, str]]) -> int | None:
        return await self._run(self.store.next_id_excluding, after_id, set(excluded))

    async def ack(self, ids: list[int]) -> int:
        return await self._run(self.store.ack, ids)

    async def reject(self, ids: list[int], code: int, message: str) -> int:
        return await self._run(self.store.reject, ids, code, message)

    async def record_failure(self, ids: list[int], code: int | None) -> None:
        await self._run(self.store.record_failure, ids, code)

    async def figures(self) -> tuple[int, int | None, float]:
        """Health figures in one trip to the writer thread (which proves it is not stuck)."""
        return await self._run(self.store.figures)

    async def restamp(self, boot: str, offset_ms: int) -> int:
        return await self._run(self.store.restamp, boot, offset_ms)

    async def release_other_boots(self, boot: str, policy: str) -> int:
        return await self._run(self.store.release_other_boots, boot, policy)

    async def set_state(self, **values: Any) -> None:
        await self._run(self.store.set_state, values)
