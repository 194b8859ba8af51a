"""A failing device's circuit breaker: its polls are skipped for a backoff that doubles.

A device that times out or refuses the connection is failing: its polls are skipped for a
backoff that doubles up to `backoff_max_s`, so that a dead slave does not eat its line's time
(the other devices behind the endpoint take turns on it). It is logged once when it starts
failing and once when it answers again, never per poll: on flash storage a log flood is a
fault of its own.
"""

from __future__ import annotations

import logging
import time

from gatewayd.acquire.endpoint import Endpoint
from gatewayd.backoff import backoff_ceiling
from gatewayd.config import DeviceConfig
from gatewayd.errors import DeviceError

log = logging.getLogger("gatewayd.acquire.poller")  # the poller's lines, as before the split


class DeviceBreaker:
    """The breaker half of DevicePoller (acquire/poller.py); `device` and `endpoint` are its."""

    device: DeviceConfig
    endpoint: Endpoint

    def __init__(self) -> None:
        self.failures = 0  # polls that failed, in all
        self.consecutive_failures = 0
        self.retry_at = 0.0  # monotonic: polls before it are skipped
        self.down_since = 0.0

    @property
    def failing(self) -> bool:
        return self.consecutive_failures > 0

    def _failed(self, exc: DeviceError, started: float) -> None:
        """A poll started at `started` (monotonic) failed: back off, and say so the first time."""
        self.failures += 1
        self.consecutive_failures += 1
        delay = backoff_ceiling(
            self.consecutive_failures, self.device.interval_s, self.device.modbus.backoff_max_s
        )
        self.retry_at = started + delay
        if self.consecutive_failures == 1:
            self.down_since = started
            log.warning(
                "device_down device=%s endpoint=%s reason=%r retry_in_s=%.1f",
                self.device.name,
                self.endpoint,
                exc.reason,
                delay,
            )

    def _answered(self) -> None:
        """A poll got its answers: a failing device is up again."""
        if not self.failing:
            return
        log.info(
            "device_up device=%s after_failures=%d down_s=%.1f",
            self.device.name,
            self.consecutive_failures,
            time.monotonic() - self.down_since,
        )
        self.consecutive_failures = 0
        self.retry_at = 0.0
