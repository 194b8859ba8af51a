"""A queue that existed before and is gone is reported loudly, not silently started afresh.

A marker beside the queue names the file it stands for (an id kept in the file's `meta`). At
the next open, a missing file, or a file without that id (its -wal was deleted before the
daemon crashed, so the committed rows went with it), is a CRITICAL line and a counter.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from gatewayd.config import QueueConfig
from gatewayd.model import Sample
from gatewayd.queue.stats import read_stats
from gatewayd.queue.writer import SampleQueue


async def make_queue(path: Path, count: int, close: bool = True) -> SampleQueue:
    queue = SampleQueue(QueueConfig(path=path, commit_interval_ms=50))
    await queue.open()
    for n in range(count):
        queue.put(Sample("subPK", "d1", 1_795_000_000_000 + n, {"P": float(n)}))
    await queue.flush()
    if close:
        await queue.close()
    return queue


def gone_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.CRITICAL and "queue_gone" in r.getMessage()
    ]


async def test_a_removed_queue_file_is_reported_at_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "queue.db"
    await make_queue(path, 20)
    path.unlink()
    await make_queue(path, 1)
    reports = gone_reports(caplog)
    assert len(reports) == 1 and str(path) in reports[0]
    assert read_stats(path).state["queues_gone"] == 1


async def test_a_queue_whose_wal_was_lost_in_a_crash_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "queue.db"
    running = await make_queue(path, 20, close=False)  # rows committed in the WAL only
    crashed = tmp_path / "after-crash"
    crashed.mkdir()
    for name in ("queue.db", "queue.db.marker"):  # the -wal deleted, the daemon killed
        shutil.copy(tmp_path / name, crashed / name)
    await running.close()
    await make_queue(crashed / "queue.db", 1)
    reports = gone_reports(caplog)
    assert len(reports) == 1 and str(crashed / "queue.db") in reports[0]


async def test_a_normal_restart_and_a_first_start_report_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "queue.db"
    await make_queue(path, 5)
    await make_queue(path, 5)
    assert gone_reports(caplog) == []
    assert read_stats(path).pending_samples == 10
