"""A queue file gatewayd may not write: refused with one clear line, left exactly as it was.

Moving it aside as "corrupt" and starting afresh would look like recovery and be a loss: its
readings would never be sent. Root ignores file modes, so as root (CI) the file sits on a tmpfs
remounted read-only, as an SD card is after I/O errors; otherwise the file is chmod 0400.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.config import QueueConfig
from gatewayd.model import Sample
from gatewayd.queue.store import SampleQueue, read_stats
from tests.support.daemon import config_data, modbus_device, start_gatewayd, write_config
from tests.support.modbus import KNOWN_POINTS


async def fill(path: Path, count: int) -> None:
    queue = SampleQueue(QueueConfig(path=path))
    await queue.open()
    for n in range(count):
        queue.put(Sample("subPK", "d1", 1_795_000_000_000 + n, {"P": float(n)}))
    await queue.close()


@pytest.fixture
def readonly_queue(tmp_path: Path) -> Iterator[Path]:
    """A queue of 25 samples that this process cannot write."""
    folder = tmp_path / "media"
    folder.mkdir()
    path = folder / "queue.db"
    if os.geteuid() != 0:
        asyncio.run(fill(path, 25))
        path.chmod(0o400)
        yield path
        path.chmod(0o600)
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], check=True)
    try:
        asyncio.run(fill(path, 25))
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_run_refuses_a_read_only_queue_and_changes_nothing(
    tmp_path: Path, readonly_queue: Path
) -> None:
    before = digest(readonly_queue)
    files = sorted(p.name for p in readonly_queue.parent.iterdir())  # the queue and its reserve
    data = config_data(
        tmp_path,
        1,  # never reached: the queue is opened first
        [modbus_device("d1", 1, 1, KNOWN_POINTS[:1])],
        queue={"path": str(readonly_queue)},
    )
    config = write_config(tmp_path / "config.toml", data)
    proc = await start_gatewayd("run", "-c", str(config))
    async with asyncio.timeout(20):
        _, err = await proc.communicate()
    log = err.decode()
    assert proc.returncode == 1, log
    assert "not writable" in log and str(readonly_queue) in log
    assert "Traceback" not in log
    assert sorted(p.name for p in readonly_queue.parent.iterdir()) == files
    assert digest(readonly_queue) == before
    # Still readable for the operator who has to rescue it.
    assert read_stats(readonly_queue).pending_samples == 25


async def test_queue_commands_read_a_queue_on_read_only_media(
    tmp_path: Path, readonly_queue: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *(
            sys.executable,
            "-m",
            "gatewayd",
            "queue",
            "stats",
            "--json",
            "--db",
            str(readonly_queue),
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert '"pending_samples": 25' in out.decode()
