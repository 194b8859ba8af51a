"""Reading devices: one connection per Modbus endpoint, one read plan per device.

Devices behind the same endpoint (unit ids on one TCP gateway or one serial line) share its
connection and take turns on it, with `inter_request_ms` of silence between requests; devices on
different endpoints never wait for each other. A device that times out or refuses the connection
is a failing device: its polls are skipped for a backoff that doubles up to `backoff_max_s`
(a circuit breaker), so a dead slave does not eat the line's time. A device that answers with
a Modbus exception is alive: only the points of that read are missing (or reported with a bad
quality). Failures are logged when a device starts failing and when it recovers, never per poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from gatewayd.acquire.decode import PointDecoder, Words, is_finite, point_decoder
from gatewayd.acquire.endpoint import Endpoint, EndpointKey, endpoint_key
from gatewayd.acquire.plan import plan_reads
from gatewayd.config import DeviceConfig, PointConfig
from gatewayd.errors import DecodeError, DeviceError, ExceptionResponse
from gatewayd.model import PointValue, Quality, Sample

log = logging.getLogger(__name__)


def bad(point: PointConfig, quality: Quality) -> PointValue | None:
    """The value reported for a point that could not be read: none, or null with a bad quality."""
    return {"value": None, "quality": int(quality)} if point.quality else None


class DevicePoller:
    """Polls one sub-device on its schedule and hands each sample to `sink`."""

    def __init__(
        self,
        device: DeviceConfig,
        endpoint: Endpoint,
        sink: Callable[[Sample], None],
        stamp: Callable[[], tuple[int, int, str | None]] | None = None,
    ) -> None:
        """`stamp` gives (wall ms, monotonic ms, boot id when the reading must be held)."""
        self.device = device
        self.endpoint = endpoint
        self.sink = sink
        self.stamp = stamp or (lambda: (time.time_ns() // 1_000_000, 0, None))
        self.plan = plan_reads(device.points, device.modbus.max_gap)
        # Per request: each point with its slice of the response and its decoder, worked out
        # once here rather than on every poll.
        self._layout = [
            [
                (p.point, p.offset, p.offset + p.point.register_count, point_decoder(p.point))
                for p in request.points
            ]
            for request in self.plan
        ]
        self.polls = 0
        self.failures = 0
        self.skipped = 0
        self.bad_values = 0
        self.consecutive_failures = 0
        self.poll_seconds = 0.0  # total time spent in reads that answered
        self.last_success_s = 0.0  # wall-clock time of the last good poll
        self.retry_at = 0.0
        self.down_since = 0.0
        self._running: asyncio.Task[None] | None = None

    @property
    def failing(self) -> bool:
        return self.consecutive_failures > 0

    async def read_sample(self) -> Sample:
        """Read every request of the plan into one sample; DeviceError if the device is unreachable."""
        points: dict[str, PointValue] = {}
        strays = self.endpoint.strays
        for request, layout in zip(self.plan, self._layout, strict=True):
            try:
                words = await self.endpoint.read(
                    request, self.device.modbus.unit_id, self.device.name
                )
            except ExceptionResponse as exc:
                self.bad_values += len(request.points)
                log.debug("read_refused device=%s code=%d", self.device.name, exc.code)
                for placed in request.points:
                    self._put(points, placed.point, bad(placed.point, Quality.DEVICE_EXCEPTION))
                continue
            for point, start, end, decode in layout:
                self._put(points, point, self._decode(point, decode, words[start:end]))
        if self.endpoint.strays != strays:
            # An answer nobody asked for arrived on the line during this poll: one of this
            # poll's answers may belong to another request. Better a gap than a wrong value.
            raise DeviceError(
                self.device.name, f"answers out of step on {self.endpoint}; poll discarded"
            )
        # Stamped when the read completed; held (with its monotonic time) while the wall clock
        # is not trusted, to be re-stamped later (gatewayd/acquire/clock.py).
        wall, mono, held = self.stamp()
        return Sample(self.device.product_key, self.device.device_key, wall, points, held, mono)

    def _decode(self, point: PointConfig, decode: PointDecoder, chunk: Words) -> PointValue | None:
        try:
            value = decode(chunk)
        except DecodeError as exc:
            self.bad_values += 1
            log.debug(
                "point_undecodable device=%s point=%s error=%r",
                self.device.name,
                point.id,
                str(exc),
            )
            return bad(point, Quality.UNDECODABLE)
        if not is_finite(value):
            self.bad_values += 1
            return bad(point, Quality.NOT_FINITE)
        return {"value": value, "quality": int(Quality.GOOD)} if point.quality else value

    @staticmethod
    def _put(points: dict[str, PointValue], point: PointConfig, value: PointValue | None) -> None:
        if value is not None:
            points[point.id] = value

    async def poll(self) -> None:
        """One scheduled poll; errors are logged on state change and never raised."""
        self._running = asyncio.current_task()
        try:
            await self._poll()
        finally:
            self._running = None

    async def _poll(self) -> None:
        now = time.monotonic()
        if now < self.retry_at:
            self.skipped += 1
            return
        self.polls += 1
        try:
            sample = await self.read_sample()
        except DeviceError as exc:
            self._failed(exc, now)
            return
        self.poll_seconds += time.monotonic() - now
        self.last_success_s = time.time()
        if self.failing:
            log.info(
                "device_up device=%s after_failures=%d down_s=%.1f",
                self.device.name,
                self.consecutive_failures,
                time.monotonic() - self.down_since,
            )
            self.consecutive_failures = 0
            self.retry_at = 0.0
        if sample.points:
            self.sink(sample)

    def _failed(self, exc: DeviceError, started: float) -> None:
        self.failures += 1
        self.consecutive_failures += 1
        delay = min(
            self.device.modbus.backoff_max_s,
            self.device.interval_s * 2 ** (self.consecutive_failures - 1),
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

    @property
    def worst_case_s(self) -> float:
        """The longest one poll can take: a request timing out on every try."""
        cfg = self.device.modbus
        return cfg.timeout_s * (cfg.retries + 1) + cfg.pause_s * len(self.plan)

    async def finish(self) -> None:
        """Let a poll in progress complete (bounded by worst_case_s), so its sample is kept."""
        task = self._running
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait({task}, timeout=self.worst_case_s + 1.0)


def build_pollers(
    devices: Sequence[DeviceConfig],
    sink: Callable[[Sample], None],
    stamp: Callable[[], tuple[int, int, str | None]] | None = None,
) -> tuple[list[DevicePoller], dict[EndpointKey, Endpoint]]:
    """One poller per device, one endpoint per distinct connection."""
    endpoints: dict[EndpointKey, Endpoint] = {}
    pollers = []
    for device in devices:
        key = endpoint_key(device.modbus)
        if key not in endpoints:
            endpoints[key] = Endpoint(device.modbus)
        pollers.append(DevicePoller(device, endpoints[key], sink, stamp))
    return pollers, endpoints
