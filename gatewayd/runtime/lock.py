"""One daemon per queue file: an exclusive `flock` on `<queue>.lock`, held for the process's life.

Two daemons on one queue would both poll and both send, each confirming rows the other sent.
The kernel drops an flock with the process (even after kill -9), so a stale lock file never
blocks a restart. The file holds the owner's pid, for the message a second daemon prints.
The `gatewayd queue …` commands do not take this lock: they go through SQLite's own locking.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from gatewayd.errors import GatewaydError


class QueueLocked(GatewaydError):
    """Another gatewayd already runs on this queue."""


def lock_path(queue: Path) -> Path:
    return queue.with_name(queue.name + ".lock")


class QueueLock:
    """`with QueueLock(path):` — raise QueueLocked if another process holds it."""

    def __init__(self, queue: Path) -> None:
        self.queue = queue
        self.path = lock_path(queue)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            hint = ""
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                hint = (
                    f"; the directory {self.path.parent} is not writable (read-only file or file"
                    " system?), and gatewayd needs to write the queue and its lock there"
                )
            raise GatewaydError(
                f"queue {self.queue}: cannot create the lock file {self.path}: "
                f"{exc.strerror}{hint}. Nothing was changed."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise QueueLocked(
                f"gatewayd is already running on {self.queue} (pid {owner or '?'}, lock "
                f"{self.path}); stop it first, or give this one another queue.path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the lock; the file stays (removing it would race)

    def __enter__(self) -> QueueLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_owner(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""
