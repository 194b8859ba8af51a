"""systemd's notify protocol: a datagram of `KEY=value` lines to $NOTIFY_SOCKET.

A handful of lines, so no libsystemd: READY=1 once the daemon is really up, STATUS= for
`systemctl status`, WATCHDOG=1 as a heartbeat, STOPPING=1 on the way out. Without
$NOTIFY_SOCKET (not under systemd) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to systemd; never raises (a lost status line must not stop the daemon)."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract socket namespace
        self.address = address
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def send(self, **fields: str | int) -> bool:
        if self._sock is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            self._sock.sendto(message.encode("utf-8"), self.address)
        except OSError as exc:
            log.warning("sd_notify_failed error=%r", str(exc))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(ready=1, status=status)

    def status(self, status: str) -> bool:
        return self.send(status=status)

    def stopping(self) -> bool:
        return self.send(stopping=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
