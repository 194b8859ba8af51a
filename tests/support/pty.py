"""A linked pair of pseudo-terminals from socat: one end for the master, one for the slave."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


def pty_pair(client: Path, server: Path) -> subprocess.Popen[bytes]:
    """Start socat linking two ptys at these paths; the caller terminates it."""
    if shutil.which("socat") is None:
        raise RuntimeError("socat is needed for serial RTU tests (apt-get install socat)")
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={client}", f"pty,raw,echo=0,link={server}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (client.exists() and server.exists()):
        if time.monotonic() > deadline or socat.poll() is not None:
            socat.terminate()
            raise RuntimeError("socat did not create the pty pair")
        time.sleep(0.01)
    return socat
