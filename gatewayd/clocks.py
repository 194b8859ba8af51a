"""The wall clock in epoch milliseconds, one way for the whole daemon.

The `time` fields of requests, CONNECT signatures, the queue's bookkeeping and the health file
use it. acquire/ (clock.py's `wall_ms` default, poller.py's stamp) still spell it out inline:
those modules were being changed elsewhere when this one was made.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch, by the wall clock (which may step)."""
    return time.time_ns() // 1_000_000
