"""The wall clock in epoch milliseconds, one way for the whole daemon.

The `time` fields of requests, CONNECT signatures, the queue's bookkeeping, the health file and
the pollers' time stamps (through acquire/clock.py) all use it.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch, by the wall clock (which may step)."""
    return time.time_ns() // 1_000_000
