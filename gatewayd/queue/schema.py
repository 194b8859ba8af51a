"""The queue file itself: creating it privately, its pragmas, its schema migrations, and what
is done with a file SQLite calls damaged (kept aside under a dated name, never deleted).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gatewayd.errors import QueueError

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

log = logging.getLogger(__name__)
_Step = Callable[["sqlite_utils.Database"], None]

MIGRATION_SET = "gatewayd"
#: The names of the migrations, in order, and their steps: sqlite-utils has no public list of a
#: set's migrations (only `pending(db)` and `applied(db)`), and `migrate` needs it to spot a file
#: written by a newer gatewayd, and to see without sqlite-utils that a file needs nothing.
KNOWN_MIGRATIONS: list[str] = []
_STEPS: list[tuple[str, _Step]] = []
COUNTERS = ("polled", "queued", "sent", "evicted", "rejected", "retried")


def _migration(name: str) -> Callable[[_Step], _Step]:
    """Register a step under `name` (in KNOWN_MIGRATIONS, and in `migrations()` once built)."""

    def register(step: _Step) -> _Step:
        KNOWN_MIGRATIONS.append(name)
        _STEPS.append((name, step))
        return step

    return register


@functools.cache
def migrations() -> Migrations:
    """sqlite-utils' migration set, built when a file needs a migration: importing sqlite-utils
    (and its plugin look-up) cost 27 ms of CPU at every start, 0.1 s of READY under a
    quarter-core quota, for a file that is almost always up to date."""
    from sqlite_utils.migrations import Migrations

    steps = Migrations(MIGRATION_SET)
    for name, step in _STEPS:
        steps(name=name)(step)
    return steps


def __getattr__(name: str) -> Any:
    if name == "MIGRATIONS":  # the set, as it was importable before it was built lazily
        return migrations()
    raise AttributeError(name)


@contextlib.contextmanager
def atomic(conn: sqlite3.Connection) -> Iterator[None]:
    """A transaction (a savepoint inside one): sqlite-utils' `Database.atomic`, without it."""
    if conn.in_transaction:
        savepoint = f"gatewayd_{os.urandom(8).hex()}"
        conn.execute(f"SAVEPOINT {savepoint}")
        try:
            yield
        except BaseException:
            if conn.in_transaction:  # a RAISE(ROLLBACK) may have ended it already
                conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
                conn.execute(f"RELEASE SAVEPOINT {savepoint}")
            raise
        conn.execute(f"RELEASE SAVEPOINT {savepoint}")
        return
    conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def upsert(
    conn: sqlite3.Connection,
    table: Literal["state", "meta"],
    values: Mapping[str, Any],
    *,
    add: bool = False,
) -> None:
    """Write key/value rows of `state` or `meta`, creating missing keys.

    `add`: add each value to what the key holds (a counter; a missing one starts at 0) instead
    of replacing it. The caller owns the transaction.
    """
    update = "value + excluded.value" if add else "excluded.value"
    conn.executemany(
        f"INSERT INTO {table} (key, value) VALUES (?, ?)"
        f" ON CONFLICT(key) DO UPDATE SET value = {update}",
        list(values.items()),
    )


@_migration("0001_initial")
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


@_migration("0002_held_samples")
def _m0002_held_samples(db: sqlite_utils.Database) -> None:
    """Readings taken while the wall clock was not trusted wait here to be re-stamped."""
    db.execute("ALTER TABLE samples ADD COLUMN held_boot TEXT")
    db.execute("ALTER TABLE samples ADD COLUMN held_mono_ms INTEGER")


@_migration("0003_held_index")
def _m0003_held_index(db: sqlite_utils.Database) -> None:
    """Finding held readings must not walk the whole queue at every start (bench/disk.py).

    Partial: normally no row is held, so the index is empty and inserts do not pay for it.
    """
    db.execute("CREATE INDEX samples_held ON samples (held_boot) WHERE held_boot IS NOT NULL")


@_migration("0004_rejected_age_index")
def _m0004_rejected_age_index(db: sqlite_utils.Database) -> None:
    """Dead letters are evicted by the age of their rejection, oldest first: without a scan."""
    db.execute("CREATE INDEX rejected_age ON rejected (rejected_ms)")


@_migration("0005_device_index")
def _m0005_device_index(db: sqlite_utils.Database) -> None:
    """Rows of a parked device must cost nothing to skip (forward/loop.py): this index finds a
    device's next row, and the next device, by seeking instead of reading every row between.
    Within one key the index is ordered by row id, which SQLite appends to every index entry."""
    db.execute("CREATE INDEX samples_device ON samples (product_key, device_key)")


#: The number of migrations this gatewayd knows, copied into `meta.schema_version` at every open.
#: `_sqlite_migrations` is the record that counts (migrate reads only that); the copy is kept
#: because it is documented (README, queue file layout) and gives anyone holding just the
#: `sqlite3` shell the version of a file taken off a gateway in one plain `SELECT`.
SCHEMA_VERSION = len(KNOWN_MIGRATIONS)


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
    applied = _applied(conn)
    unknown = [name for name in applied if name not in set(KNOWN_MIGRATIONS)]
    if unknown:
        raise QueueError(
            f"queue file has schema migrations this version does not know ({', '.join(unknown)}); "
            "it was written by a newer gatewayd"
        )
    if applied == KNOWN_MIGRATIONS and _schema_version(conn) == SCHEMA_VERSION:
        return  # up to date: the usual start, without sqlite-utils
    import sqlite_utils

    migrations().apply(sqlite_utils.Database(conn))
    with atomic(conn):
        upsert(conn, "meta", {"schema_version": SCHEMA_VERSION})


def _applied(conn: sqlite3.Connection) -> list[str]:
    """The names of our migrations the file records as applied, in order (sqlite-utils' table)."""
    table = "_sqlite_migrations"
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone():
        return []
    rows = conn.execute(
        f"SELECT name FROM {table} WHERE migration_set = ? ORDER BY rowid", (MIGRATION_SET,)
    )
    return [row[0] for row in rows]


def _schema_version(conn: sqlite3.Connection) -> int | None:
    with contextlib.suppress(sqlite3.OperationalError):  # no meta table yet
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else None
    return None


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


def whole_file_problem(path: Path) -> str | None:
    """SQLite's quick_check on its own read-only connection: None if every page is sound.

    Only corruption counts: a file that cannot be opened here (gone, locked) is not damaged.
    """
    try:
        conn = connect(path, readonly=True)
    except (QueueError, sqlite3.Error):
        return None
    try:
        rows = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        return str(exc) if getattr(exc, "sqlite_errorname", "") in CORRUPTION else None
    finally:
        conn.close()
    return None if rows == ["ok"] else "; ".join(rows)


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


def quarantine(path: Path, problem: str) -> Path:
    """Move a damaged queue aside (kept, for the salvage and the operator) and say so loudly."""
    kept = move_aside(path)
    log.critical(
        "queue_corrupt path=%s problem=%r kept_as=%s action='started a fresh queue;"
        " salvaging the readable rows into it'",
        path,
        problem,
        kept,
    )
    return kept


def open_connection(
    path: Path, synchronous: str, max_bytes: int
) -> tuple[sqlite3.Connection, Path | None]:
    """Open (or create) the queue; a corrupt file is moved aside and a fresh queue started.

    Returns the connection and, when the file was damaged, where it was kept (to salvage from).

    A file that cannot be written (permissions, a read-only mount) is refused with QueueError
    and left exactly as it was: it is not corrupt, and its readings must still be sent.
    """
    _refuse_unwritable(path)
    conn = None
    kept: Path | None = None
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
        kept = quarantine(path, problem)
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
    return conn, kept
