"""Signals that arrive before the daemon's event loop can take them.

SIGHUP's default action ends the process, and `gatewayd run` spends a second or more importing
and opening things before asyncio installs its own handler: a reload requested in that time
(systemd's ExecReload, an operator's `kill -HUP`) killed the daemon. This module is imported
first and notes such a signal; the daemon acts on it as soon as it runs. No imports beyond the
standard library, so that installing it costs nothing.
"""

from __future__ import annotations

import gc
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


def hold_collections() -> None:
    """No cyclic garbage collection while starting, until `resume_collections`.

    Importing and building the daemon allocates a few hundred thousand objects that live for
    the whole run, and the collector kept walking them: 7-10 % of the CPU to READY (0.04 s of
    0.47 s for 200 devices; bench/poll.py's quarter-core quota turns that into 0.2 s of READY).
    The few cycles left as garbage meanwhile are collected once collections resume.
    """
    gc.disable()


def resume_collections() -> None:
    """Back to normal collection (the daemon calls this once READY is sent)."""
    gc.enable()
