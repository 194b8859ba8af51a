"""Retry delays: capped exponential backoff with full jitter.

Full jitter (a uniform draw between zero and the exponential ceiling) spreads the retries of many
gateways that lost the same hub at the same moment, instead of having them return in lockstep. A delay that must be exact (a parked sub-device's next
login, which nothing else contends for) takes the ceiling alone.
"""

from __future__ import annotations

from collections.abc import Callable


def backoff_ceiling(failures: int, low: float, high: float) -> float:
    """min(high, low * 2^(failures-1)): the delay after `failures` failures, without jitter."""
    return min(high, low * (2 ** max(0, failures - 1)))


def backoff_delay(failures: int, low: float, high: float, rand: Callable[[], float]) -> float:
    """Uniform in [0, backoff_ceiling(...)]; `rand` returns a float in [0, 1)."""
    return backoff_ceiling(failures, low, high) * rand()
