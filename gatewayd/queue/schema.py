"""The queue file itself: creating it privately, its pragmas, and what is done with a file
SQLite calls damaged (kept aside under a dated name, never deleted).

Opening is where a damaged or unwritable file must be told apart (one is moved aside and a fresh
queue started, the other refused untouched), so it is all here; the schema the file is brought
to is in migrations.py, the SQL helpers every module shares in sql.py.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from gatewayd.errors import QueueError
from gatewayd.queue.migrations import migrate

log = logging.getLogger(__name__)


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
