"""Retry delays: capped exponential backoff with full jitter.

Full jitter (a uniform draw between zero and the exponential ceiling) spreads the retries of many
gateways that lost the same hub at the same moment, instead of having them return in lockstep.
"""

from __future__ import annotations

from collections.abc import Callable


def backoff_delay(failures: int, low: float, high: float, rand: Callable[[], float]) -> float:
    """Uniform in [0, min(high, low * 2^(failures-1))]; `rand` returns a float in [0, 1)."""
    ceiling = min(high, low * (2 ** max(0, failures - 1)))
    return ceiling * rand()
