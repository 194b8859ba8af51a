"""Filling a disk as another program on the gateway box might: the chaos round and the full-disk
tests both need a disk that refuses the next write."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fill_disk(filler: Path) -> None:
    """Write `filler` until the disk refuses: in MiB, then in pages for the last bit."""
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    try:
        for chunk in (bytes(1 << 20), bytes(4096)):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
