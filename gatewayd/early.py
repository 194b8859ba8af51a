"""Signals that arrive before the daemon's event loop can take them.

SIGHUP's default action ends the process, and `gatewayd run` spends a second or more importing
and opening things before asyncio installs its own handler: a reload requested in that time
(systemd's ExecReload, an operator's `kill -HUP`) killed the daemon. This module is imported
first and notes such a signal; the daemon acts on it as soon as it runs. No imports beyond the
standard library, so that installing it costs nothing.
"""

from __future__ import annotations

import signal
from types import FrameType

_seen: list[int] = []


def _note(signum: int, frame: FrameType | None) -> None:
    _seen.append(signum)


def hold_reloads() -> None:
    """Note SIGHUPs from now on instead of dying of them (the main thread only)."""
    signal.signal(signal.SIGHUP, _note)


def reload_was_requested() -> bool:
    """A SIGHUP came while nobody could act on it; forget it once asked."""
    seen = bool(_seen)
    _seen.clear()
    return seen
