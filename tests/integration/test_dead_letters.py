"""Dead letters have their own bound, and an insert never evicts the samples it writes.

Months of one device with a model mismatch must not cost every other device its readings:
`rejected` is kept within `rejected_max_bytes` and `rejected_max_age_s` (oldest rejection first,
counted in `rejected_evicted`), and the samples bound evicts older samples only.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gatewayd.config import QueueConfig
from gatewayd.model import Sample
from gatewayd.queue.stats import read_stats
from gatewayd.queue.store import Store, now_ms, open_store

MiB = 1 << 20


def readings(device: str, start: int, count: int) -> list[Sample]:
    return [
        Sample("subPK", device, 1_795_000_000_000 + n, {f"P{k}": n * 1.5 + k for k in range(20)})
        for n in range(start, start + count)
    ]


def open_small(path: Path, **bounds: int) -> Store:
    cfg = QueueConfig(path=path, max_bytes=2 * MiB, synchronous="normal", **bounds)  # type: ignore[arg-type]
    return open_store(path, cfg.synchronous, cfg.max_bytes, cfg)


def dead_letter_bytes(store: Store) -> int:
    row = store.conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name = 'rejected'").fetchone()
    return int(row[0] or 0)


def test_dead_letters_past_the_whole_bound_do_not_evict_new_readings(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = open_small(path)
    moved = 0
    for n in range(0, 8000, 200):  # 8,000 dead letters: far more than the whole 2 MiB bound
        store.insert(readings("mismatched", n, 200))
        ids = [row.id for row in store.fetch_after(0, 10_000)]
        moved += store.reject(ids, 1101, "model mismatch")
    store.insert(readings("healthy", 0, 100))
    assert [r.device_key for r in store.fetch_after(0, 1000)] == ["healthy"] * 100
    assert dead_letter_bytes(store) <= 2 * MiB // 4  # the default share: a quarter
    store.conn.close()
    stats = read_stats(path)
    assert stats.pending_samples == 100
    assert moved == 8000 and 0 < stats.rejected < moved
    assert stats.state["rejected_evicted"] == moved - stats.rejected  # counted


def test_dead_letters_older_than_their_age_bound_are_evicted_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = open_small(path, rejected_max_age_s=3600)
    store.insert(readings("mismatched", 0, 50))
    store.reject([row.id for row in store.fetch_after(0, 100)], 1101, "model mismatch")
    with store.conn:  # rejected two hours ago
        store.conn.execute("UPDATE rejected SET rejected_ms = ?", (now_ms() - 7200_000,))
    store.insert(readings("healthy", 0, 10))
    store.conn.close()
    stats = read_stats(path)
    assert stats.rejected == 0 and stats.state["rejected_evicted"] == 50
    assert stats.pending_samples == 10


def test_an_insert_past_the_bound_evicts_only_older_samples(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = open_small(path)
    group = readings("healthy", 0, 30_000)  # one group larger than the whole bound
    store.insert(group)
    kept = store.fetch_after(0, 100_000)
    store.conn.close()
    assert len(kept) == 30_000  # over the bound until the next insert, never its own rows
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM state WHERE key = 'evicted'").fetchone()[0] == 0
