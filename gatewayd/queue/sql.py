"""Two SQL helpers every part of the queue uses on a plain `sqlite3` connection.

A transaction that nests (a savepoint inside one) and an upsert of key/value rows, without
sqlite-utils: importing it costs start time that a queue file which is up to date does not need
(see migrations.py). Apart so that the migrations and the queue's other modules share them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any, Literal


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
