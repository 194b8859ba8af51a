"""Reading devices: one connection per Modbus endpoint, one read plan per device.

Devices behind the same endpoint (unit ids on one TCP gateway or one serial line) share its
connection and take turns on it, with `inter_request_ms` of silence between requests; devices on
different endpoints never wait for each other. A device that times out or refuses the connection
is a failing device: its polls are skipped for a while (a circuit breaker, breaker.py). A device
that answers with a Modbus exception is alive: only the points of that read are missing (or
reported with a bad quality), logged when a read starts being refused and when it recovers.
Each sample goes through report by exception (deadband.py) on its way to the sink.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from gatewayd.acquire.breaker import DeviceBreaker
from gatewayd.acquire.deadband import ExceptionFilter
from gatewayd.acquire.decode import PointDecoder, Words, is_finite, point_decoder
from gatewayd.acquire.endpoint import Endpoint, EndpointKey, LineOutOfStep, endpoint_key
from gatewayd.acquire.plan import ReadRequest, plan_reads
from gatewayd.clocks import now_ms
from gatewayd.config import DeviceConfig, PointConfig
from gatewayd.errors import DecodeError, DeviceError, ExceptionResponse, exception_text
from gatewayd.losses import Losses
from gatewayd.model import PointValue, Quality, Sample

log = logging.getLogger(__name__)


def bad(point: PointConfig, quality: Quality) -> PointValue | None:
    """The value reported for a point that could not be read: none, or null with a bad quality."""
    if point.quality and point.unreadable == "null":
        return {"value": None, "quality": int(quality)}
    return None


def request_text(request: ReadRequest) -> str:
    """`holding 0+2`: the table, first address and count of one read."""
    return f"{request.table} {request.address}+{request.count}"


class DevicePoller(DeviceBreaker):
    """Polls one sub-device on its schedule and hands each sample to `sink`."""

    def __init__(
        self,
        device: DeviceConfig,
        endpoint: Endpoint,
        sink: Callable[[Sample], None],
        stamp: Callable[[], tuple[int, int, str | None]] | None = None,
        losses: Losses | None = None,
    ) -> None:
        """`stamp` gives (wall ms, monotonic ms, boot id when the reading must be held);
        `losses` counts readings lost after `sink` took them (report by exception reads it)."""
        super().__init__()
        self.device = device
        self.endpoint = endpoint
        self.sink = sink
        self.stamp = stamp or (lambda: (now_ms(), 0, None))
        self.plan = plan_reads(device.points, device.modbus.max_gap)
        self.report_by_exception = ExceptionFilter(
            device.points, losses, (device.product_key, device.device_key)
        )
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
        self.skipped = 0
        self.overruns = 0  # runs skipped because the last poll was still at it
        self.bad_values = 0
        #: Polls that gave a sample; polls thrown away because the line was out of step.
        self.successes = 0
        self.discarded = 0
        self.out_of_step = False
        #: Reads answered with a Modbus exception, in all; and polls with at least one.
        self.refused_reads = 0
        self.refused_polls = 0
        #: Plan index -> exception code, for reads refused on their last try (logged on change).
        self.refusing: dict[int, int] = {}
        #: Point id -> why it is missing from the last sample (for `gatewayd poll`).
        self.unread: dict[str, str] = {}
        self._unusable: dict[str, str] = {}  # points read but unusable at the last poll
        self.poll_seconds = 0.0  # total time spent in reads that answered
        self.last_success_s = 0.0  # wall-clock time of the last good poll
        self._running: asyncio.Task[None] | None = None

    async def read_sample(self) -> Sample:
        """Read every request of the plan into one sample; DeviceError if the device is unreachable."""
        unit_id = self.device.modbus.unit_id
        epoch = self.endpoint.unit_epoch(unit_id)
        refused_before = self.refused_reads
        points = await self.read_points()
        # Stamped when the reads completed; held (with its monotonic time) while the wall clock
        # is not trusted, to be re-stamped later (gatewayd/acquire/clock.py).
        wall, mono, held = self.stamp()
        # On a serial line the last answer may have been a copy of an earlier one (a repeater)
        # and the real one still to come: the poll is trusted only once no answer can come.
        await self.endpoint.quiet_after_last_request(unit_id, self.device.modbus.timeout_s)
        if self.endpoint.unit_epoch(unit_id) != epoch:
            # A frame from this unit that no request explains arrived during this poll: one of
            # this poll's answers may belong to another request. Better a gap than a wrong value.
            raise LineOutOfStep(
                self.device.name, f"answers out of step on {self.endpoint}; poll discarded"
            )
        if self.refused_reads != refused_before:  # counted only for a poll that is kept
            self.refused_polls += 1
        self._log_unreadable_changes()
        return Sample(self.device.product_key, self.device.device_key, wall, points, held, mono)

    async def read_points(self) -> dict[str, PointValue]:
        """Every request of the plan read and decoded, refused reads as their points' quality.

        Only read_sample makes a sample of them: it also waits out the serial line's hold and
        checks its strays (a decode test needs neither)."""
        points: dict[str, PointValue] = {}
        self.unread = {}
        for index, (request, layout) in enumerate(zip(self.plan, self._layout, strict=True)):
            try:
                m = self.device.modbus
                words = await self.endpoint.read(
                    request, m.unit_id, self.device.name, m.timeout_s, m.retries
                )
            except ExceptionResponse as exc:
                self._refused(index, request, exc.code)
                for placed in request.points:
                    self._put(points, placed.point, bad(placed.point, Quality.DEVICE_EXCEPTION))
                continue
            if index in self.refusing:
                del self.refusing[index]
                log.info(
                    "read_recovered device=%s read=%s", self.device.name, request_text(request)
                )
            for point, start, end, decode in layout:
                self._put(points, point, self._decode(point, decode, words[start:end]))
        return points

    def _log_unreadable_changes(self) -> None:
        """A point that starts or stops giving an unusable value (NaN, undecodable) is logged
        once each way, like a refused read; `unread` holds the reasons of this poll."""
        now = {pid: why for pid, why in self.unread.items() if not why.startswith("exception")}
        for point_id, why in now.items():
            if point_id not in self._unusable:
                log.warning(
                    "point_unusable device=%s point=%s reason=%r",
                    self.device.name,
                    point_id,
                    why,
                )
        for point_id in self._unusable.keys() - now.keys():
            log.info("point_usable device=%s point=%s", self.device.name, point_id)
        self._unusable = now

    def _refused(self, index: int, request: ReadRequest, code: int) -> None:
        """Count a refused read; log it when the read starts being refused, not on every poll."""
        self.refused_reads += 1
        self.bad_values += len(request.points)
        why = f"exception {exception_text(code)} ({request_text(request)})"
        for placed in request.points:
            self.unread[placed.point.id] = why
        if self.refusing.get(index) != code:
            self.refusing[index] = code
            log.warning(
                "read_refused device=%s read=%s code=%r points=%s",
                self.device.name,
                request_text(request),
                exception_text(code),
                ",".join(p.point.id for p in request.points),
            )

    def _decode(self, point: PointConfig, decode: PointDecoder, chunk: Words) -> PointValue | None:
        try:
            value = decode(chunk)
        except DecodeError as exc:
            self.bad_values += 1
            self.unread[point.id] = f"registers do not decode as {point.type}: {exc}"[:160]
            log.debug(
                "point_undecodable device=%s point=%s error=%r",
                self.device.name,
                point.id,
                str(exc),
            )
            return bad(point, Quality.UNDECODABLE)
        if not is_finite(value):
            self.bad_values += 1
            self.unread[point.id] = "the device sent NaN or infinity"
            return bad(point, Quality.NOT_FINITE)
        return {"value": value, "quality": int(Quality.GOOD)} if point.quality else value

    @staticmethod
    def _put(points: dict[str, PointValue], point: PointConfig, value: PointValue | None) -> None:
        if value is not None:
            points[point.id] = value

    def overran(self) -> None:
        """A run was skipped because the last poll was still at it: counted as skipped, and
        logged the first time (a serial poll is held one timeout after its last request)."""
        self.skipped += 1
        self.overruns += 1
        if self.overruns == 1:
            log.warning(
                "poll_overran device=%s interval_s=%g worst_case_s=%.2f",
                self.device.name,
                self.device.interval_s,
                self.worst_case_s,
            )

    async def poll(self) -> None:
        """One scheduled poll; device errors are logged on state change and never raised
        (what the sink raises is: the daemon fails the stage)."""
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
        except LineOutOfStep as exc:
            self.discarded += 1
            if not self.out_of_step:
                self.out_of_step = True
                log.warning("polls_discarded device=%s reason=%r", self.device.name, exc.reason)
            return
        except DeviceError as exc:
            self._failed(exc, now)
            return
        self.successes += 1
        if self.out_of_step:
            self.out_of_step = False
            log.info("polls_trusted_again device=%s discarded=%d", self.device.name, self.discarded)
        self.poll_seconds += time.monotonic() - now
        self.last_success_s = time.time()
        self._answered()
        self.report_by_exception.hand_on(sample, now, self.sink)

    @property
    def worst_case_s(self) -> float:
        """The longest one poll can take: a request timing out on every try."""
        cfg = self.device.modbus
        # Each try may wait one timeout for its answer and, on a serial line, one more for an
        # answer still owed before the retry (endpoint.py).
        # A read whose answer looks like a copy costs up to four timeouts more (the real answer
        # awaited, the unit quiet, asked once more); then one timeout after the last request,
        # for an answer that may still come.
        reads = cfg.timeout_s * (2 * cfg.retries + 5) * len(self.plan)
        return reads + cfg.pause_s * len(self.plan) + cfg.timeout_s

    async def finish(self) -> None:
        """Let a poll in progress complete (bounded by worst_case_s), so its sample is kept."""
        task = self._running
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait({task}, timeout=self.worst_case_s + 1.0)


def build_pollers(
    devices: Sequence[DeviceConfig],
    sink: Callable[[Sample], None],
    stamp: Callable[[], tuple[int, int, str | None]] | None = None,
    losses: Losses | None = None,
) -> tuple[list[DevicePoller], dict[EndpointKey, Endpoint]]:
    """One poller per device, one endpoint per distinct connection."""
    endpoints: dict[EndpointKey, Endpoint] = {}
    pollers = []
    for device in devices:
        key = endpoint_key(device.modbus)
        if key not in endpoints:
            endpoints[key] = Endpoint(device.modbus)
        pollers.append(DevicePoller(device, endpoints[key], sink, stamp, losses))
    return pollers, endpoints
