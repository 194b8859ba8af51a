"""The queue file's schema: numbered migrations, recorded in the file, applied at every open.

Numbered and transactional (sqlite-utils' migrations), so that a file written by any older
gatewayd is brought up to date, and one written by a newer gatewayd is refused rather than
misread. sqlite-utils is imported only when a file needs a migration: the usual start, with a
file that is up to date, reads two small tables and nothing more.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gatewayd.errors import QueueError
from gatewayd.queue.sql import atomic, upsert

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

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
    """Rows of a parked device must cost nothing to skip (forward/batches.py): this index finds a
    device's next row, and the next device, by seeking instead of reading every row between.
    Within one key the index is ordered by row id, which SQLite appends to every index entry."""
    db.execute("CREATE INDEX samples_device ON samples (product_key, device_key)")


#: The number of migrations this gatewayd knows, copied into `meta.schema_version` at every open.
#: `_sqlite_migrations` is the record that counts (migrate reads only that); the copy is kept
#: because it is documented (README, queue file layout) and gives anyone holding just the
#: `sqlite3` shell the version of a file taken off a gateway in one plain `SELECT`.
SCHEMA_VERSION = len(KNOWN_MIGRATIONS)


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
