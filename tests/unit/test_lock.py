"""One daemon per queue: the flock beside the queue file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.runtime.lock import QueueLock, QueueLocked, lock_path


def test_a_second_holder_is_refused_with_the_owner_and_the_lock_goes_with_release(
    tmp_path: Path,
) -> None:
    queue = tmp_path / "state" / "q.db"
    with QueueLock(queue) as first:
        assert first.path == lock_path(queue) == tmp_path / "state" / "q.db.lock"
        with pytest.raises(QueueLocked) as refused:
            QueueLock(queue).acquire()
        assert f"pid {os.getpid()}" in str(refused.value) and str(queue) in str(refused.value)
        # Another process is refused too (flock is per open file, and per process).
        probe = (
            "import sys; from gatewayd.runtime.lock import QueueLock, QueueLocked\n"
            f"try:\n QueueLock(__import__('pathlib').Path({str(queue)!r})).acquire()\n"
            "except QueueLocked: sys.exit(3)\n"
        )
        assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 3
    with QueueLock(queue):  # released: the next one gets it
        pass
    assert (lock_path(queue).stat().st_mode & 0o777) == 0o600


def test_the_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    queue = tmp_path / "q.db"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from gatewayd.runtime.lock import QueueLock\n"
            f"QueueLock(pathlib.Path({str(queue)!r})).acquire(); print('held', flush=True)\n"
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as holder:  # closes the pipes and reaps the child
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
            with pytest.raises(QueueLocked):
                QueueLock(queue).acquire()
        finally:
            holder.kill()  # like kill -9 of a daemon: no clean-up of its own
            holder.wait()
    with QueueLock(queue):
        pass
