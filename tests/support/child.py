"""`gatewayd run` as a real child process that a test can kill -9 and start again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path


class Child:
    """The daemon with a NOTIFY_SOCKET the test reads, so READY=1 is awaited, not guessed.

    Its log (stderr) is appended to `log_path` across restarts, so a test can read everything
    every incarnation said; without one the log is discarded.
    """

    def __init__(
        self,
        config: Path,
        notify: Path,
        log_path: Path | None = None,
        log_level: str = "ERROR",
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.env = env or {}  # added to the test's environment (e.g. libfaketime's)
        self.notify_path = notify
        self.log_path = log_path
        self.log_level = log_level
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._sock: socket.socket | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, timeout_s: float = 20.0) -> None:
        self._close_notify()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if self.notify_path.exists():
            self.notify_path.unlink()
        sock.bind(str(self.notify_path))
        sock.setblocking(False)
        self._sock = sock
        env = {**os.environ, **self.env, "NOTIFY_SOCKET": str(self.notify_path)}
        log = self.log_path.open("ab") if self.log_path is not None else None
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gatewayd",
                "run",
                "-c",
                str(self.config),
                "--log-level",
                self.log_level,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log if log is not None else asyncio.subprocess.DEVNULL,
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own descriptor
        self.starts += 1
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while b"READY=1" not in await loop.sock_recv(sock, 4096):
                pass
        # Keep reading (and dropping) watchdog and status messages, as systemd would.
        loop.add_reader(sock.fileno(), self._discard)

    def _discard(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.recv(4096)

    def _close_notify(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self._close_notify()

    async def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM and wait (kill if it does not stop in time); returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout_s):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._close_notify()
        return self.proc.returncode
