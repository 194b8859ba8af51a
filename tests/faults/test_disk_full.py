"""A full disk with the uplink back: confirmed rows must be deleted so that new readings fit.

Deleting needs room too (SQLite writes the change to the WAL first). The queue keeps a reserve
file of its own and gives it up when the disk is full, so a confirmation can always be saved;
rows confirmed but not deleted are never sent again; every reading lost is counted. Real SQLite
on a small tmpfs (root only; unmounted in teardown).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.config import QueueConfig
from gatewayd.errors import QueueError
from gatewayd.model import Sample
from gatewayd.queue.stats import read_stats
from gatewayd.queue.writer import SampleQueue
from tests.support.disk import fill_disk

START_MS = 1_795_000_000_000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def readings(start: int, count: int) -> list[Sample]:
    return [
        Sample("subPK", f"d{n % 3}", START_MS + n, {f"P{k}": n + k / 10 for k in range(8)})
        for n in range(start, start + count)
    ]


async def fill_until_full(queue: SampleQueue) -> int:
    """Put readings until the disk refuses the group; returns the next reading number."""
    n = 0
    with pytest.raises(QueueError, match="full"):
        while True:
            for sample in readings(n, 200):
                queue.put(sample)
            n += 200
            await queue.flush()
    return n


async def test_a_full_disk_drains_when_the_uplink_is_back_and_new_readings_fit_again(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd.queue")
    path = small_disk / "queue.db"
    queue = SampleQueue(QueueConfig(path=path, memory_buffer_samples=100, commit_interval_ms=50))
    await queue.open()
    sent: list[int] = []
    try:
        n = await fill_until_full(queue)
        for sample in readings(n, 300):  # polls go on: the newest 100 wait in memory
            queue.put(sample)
        n += 300
        with contextlib.suppress(QueueError):
            await queue.flush()
        dropped = queue.dropped_in_memory
        assert dropped > 0
        # The uplink is back: the drain sends the backlog and each 200 reply is acknowledged.
        for _ in range(200):
            rows = await queue.fetch_after(0, 200)  # from the start: a re-sent row would show
            if not rows:
                break
            sent += [r.ts_ms for r in rows]
            await queue.ack([r.id for r in rows])
            with contextlib.suppress(QueueError):
                await queue.flush()
        assert len(sent) == len(set(sent)), "a confirmed row was sent again"
        # Room again: new readings are committed.
        for sample in readings(n, 50):
            queue.put(sample)
        assert await queue.flush() == 50
        assert not queue.write_failing
    finally:
        await queue.close()
    stats = read_stats(path)
    assert stats.state["lost_disk"] == dropped
    assert queue.losses.samples == {"dropped_in_memory": dropped}  # report by exception told
    assert stats.pending_samples == 50
    assert len(sent) + dropped == n  # every reading sent once, or counted lost
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "queue_reserve_released" in messages
    assert f"lost_while_failing={dropped}" in messages


async def test_a_stop_while_writes_fail_counts_and_logs_what_memory_held(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd.queue")
    path = small_disk / "queue.db"
    queue = SampleQueue(QueueConfig(path=path, memory_buffer_samples=100, commit_interval_ms=50))
    await queue.open()
    n = await fill_until_full(queue)
    for sample in readings(n, 300):
        queue.put(sample)
    with contextlib.suppress(QueueError):
        await queue.flush()
    dropped, held = queue.dropped_in_memory, queue.buffered
    assert held == 100
    await queue.close()  # the disk still refuses: what memory held is lost, and said so
    assert queue.lost_at_stop == held
    assert queue.losses.samples == {"dropped_in_memory": dropped, "lost_at_stop": held}
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"queue_lost_at_stop samples={held} " in m for m in messages), messages
    assert any(f"lost_while_failing={dropped}" in m for m in messages), messages


async def queued_and_closed(path: Path, count: int) -> SampleQueue:
    """A queue file holding `count` readings, closed (as a daemon leaves it when it stops)."""
    queue = SampleQueue(QueueConfig(path=path, commit_interval_ms=50))
    await queue.open()
    for sample in readings(0, count):
        queue.put(sample)
    await queue.flush()
    await queue.close()
    return queue


async def test_a_restart_on_a_full_disk_opens_the_queue_and_drains_it(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the chaos round: after a kill -9 on a full disk the daemon could not start."""
    caplog.set_level(logging.INFO, logger="gatewayd.queue")
    path = small_disk / "queue.db"
    await queued_and_closed(path, 500)
    fill_disk(small_disk / "filler")
    queue = SampleQueue(QueueConfig(path=path, commit_interval_ms=50))
    await queue.open()  # the reserve is given up so that the queue opens
    try:
        rows = await queue.fetch_after(0, 1000)
        assert len(rows) == 500
        await queue.ack([r.id for r in rows])
        assert await queue.fetch_after(0, 1000) == []
    finally:
        await queue.close()
    assert read_stats(path).pending_samples == 0


async def test_damage_met_on_a_full_disk_switches_once_there_is_room(small_disk: Path) -> None:
    """Found by the long chaos round: the fresh queue could not be created on the full disk,
    and the daemon kept the closed damaged one for good (every later write failed)."""
    from tests.faults.test_queue_damage import damage_middle, write_queue

    path = small_disk / "queue.db"
    write_queue(path, 3000)
    damage_middle(path, count=2)
    cfg = QueueConfig(path=path, commit_interval_ms=50)
    queue = SampleQueue(cfg, check_at_start=False)
    await queue.open()
    try:
        queue.reserve.release()  # spent by an earlier episode, the disk never had room since
        fill_disk(small_disk / "filler")
        for sample in readings(10_000, 20):
            queue.put(sample)
        with pytest.raises(QueueError):
            await queue.fetch_after(0, 5000)  # meets the damage; no room for a fresh queue
        with contextlib.suppress(QueueError):
            await queue.flush()
        (small_disk / "filler").unlink()
        assert await queue.flush() == 20  # room again: the fresh queue takes over
        await queue.wait_salvaged()
    finally:
        await queue.close()
    stats = read_stats(path)
    assert stats.pending_samples + int(stats.state["lost_corrupt"]) == 3020


async def test_a_start_on_a_full_disk_without_a_reserve_waits_for_room(small_disk: Path) -> None:
    """Found by the long chaos round: a restart on a full disk, the reserve spent, exited 1."""
    path = small_disk / "queue.db"
    queue = await queued_and_closed(path, 50)
    queue.reserve.release()
    for leftover in ("-wal", "-shm"):  # as after a kill -9
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{leftover}")
    fill_disk(small_disk / "filler")
    queue = SampleQueue(QueueConfig(path=path, commit_interval_ms=50))
    await queue.open()  # polling may start: readings wait in memory until there is room
    try:
        for sample in readings(50, 10):
            queue.put(sample)
        with pytest.raises(QueueError):
            await queue.flush()
        (small_disk / "filler").unlink()
        assert await queue.flush() == 10
        assert len(await queue.fetch_after(0, 1000)) == 60
    finally:
        await queue.close()
