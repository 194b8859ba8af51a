"""Reading devices: one connection per Modbus endpoint, one read plan per device.

Devices behind the same endpoint (unit ids on one TCP gateway or one serial line) share its
connection and take turns on it; devices on different endpoints never wait for each other. A
device error is logged with the device name when the device starts failing and when it recovers,
never on every poll, and never escapes its job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from gatewayd.config import DeviceConfig, ModbusConfig
from gatewayd.errors import DecodeError, DeviceError
from gatewayd.modbus.decode import decode_point, is_finite
from gatewayd.modbus.plan import ReadRequest, plan_reads
from gatewayd.model import PointValue, Sample

log = logging.getLogger(__name__)

EndpointKey = tuple[str, ...]


def endpoint_key(cfg: ModbusConfig) -> EndpointKey:
    """Devices with equal keys share one connection."""
    if cfg.transport == "rtu":
        return ("rtu", str(cfg.serial_port))
    return (cfg.transport, str(cfg.host), str(cfg.port))


class Endpoint:
    """One Modbus connection; requests on it are serialised."""

    def __init__(self, cfg: ModbusConfig) -> None:
        self.cfg = cfg
        self.key = endpoint_key(cfg)
        self.lock = asyncio.Lock()
        self.client: AsyncModbusTcpClient | AsyncModbusSerialClient
        # reconnect_delay=0: we reconnect on demand at the next poll, not in the background.
        if cfg.transport == "rtu":
            self.client = AsyncModbusSerialClient(
                str(cfg.serial_port),
                framer=FramerType.RTU,
                baudrate=cfg.baudrate,
                bytesize=cfg.bytesize,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                timeout=cfg.timeout_s,
                retries=cfg.retries,
                reconnect_delay=0,
            )
        else:
            framer = FramerType.RTU if cfg.transport == "rtu_over_tcp" else FramerType.SOCKET
            self.client = AsyncModbusTcpClient(
                str(cfg.host),
                port=cfg.port,
                framer=framer,
                timeout=cfg.timeout_s,
                retries=cfg.retries,
                reconnect_delay=0,
            )

    def __str__(self) -> str:
        return ":".join(self.key)

    async def read(self, request: ReadRequest, unit_id: int) -> Sequence[int] | Sequence[bool]:
        """Read one request; raise DeviceError with the reason on any failure."""
        async with self.lock:
            try:
                if not self.client.connected and not await self.client.connect():
                    raise DeviceError(str(self), "cannot connect")
                response = await self._call(request, unit_id)
            except ModbusException as exc:
                self.client.close()
                raise DeviceError(str(self), f"{type(exc).__name__}: {exc}") from None
        if response.isError():
            code = getattr(response, "exception_code", "?")
            raise DeviceError(
                str(self),
                f"exception response {code} for {request.table} {request.address}+{request.count}",
            )
        if request.table in ("coil", "discrete"):
            bits = list(response.bits)[: request.count]
            if len(bits) < request.count:
                raise DeviceError(str(self), f"short response: {len(bits)} of {request.count} bits")
            return bits
        registers = list(response.registers)
        if len(registers) != request.count:
            raise DeviceError(str(self), f"short response: {len(registers)} of {request.count}")
        return registers

    async def _call(self, request: ReadRequest, unit_id: int) -> ModbusPDU:
        readers = {
            "holding": self.client.read_holding_registers,
            "input": self.client.read_input_registers,
            "coil": self.client.read_coils,
            "discrete": self.client.read_discrete_inputs,
        }
        reader = readers[request.table]
        return await reader(request.address, count=request.count, device_id=unit_id)

    def close(self) -> None:
        self.client.close()


class DevicePoller:
    """Polls one sub-device and hands each sample to `sink`."""

    def __init__(
        self,
        device: DeviceConfig,
        endpoint: Endpoint,
        sink: Callable[[Sample], None],
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.device = device
        self.endpoint = endpoint
        self.sink = sink
        self.clock_ms = clock_ms
        self.plan = plan_reads(device.points)
        self.failing = False
        self.polls = 0
        self.failures = 0
        self.dropped_values = 0
        self._running: asyncio.Task[None] | None = None

    async def read_sample(self) -> Sample:
        """Read every request of the plan and decode it into one sample (raises DeviceError)."""
        points: dict[str, PointValue] = {}
        for request in self.plan:
            words = await self.endpoint.read(request, self.device.modbus.unit_id)
            for placed in request.points:
                point = placed.point
                chunk = words[placed.offset : placed.offset + point.register_count]
                try:
                    value = decode_point(point, chunk)
                except DecodeError as exc:
                    self.dropped_values += 1
                    log.warning(
                        "point_undecodable device=%s point=%s error=%r",
                        self.device.name,
                        point.id,
                        str(exc),
                    )
                    continue
                if not is_finite(value):
                    self.dropped_values += 1
                    continue
                points[point.id] = {"value": value, "quality": 0} if point.quality else value
        return Sample(self.device.product_key, self.device.device_key, self.clock_ms(), points)

    async def poll(self) -> None:
        """One scheduled poll; errors are logged on state change and never raised."""
        self._running = asyncio.current_task()
        try:
            await self._poll()
        finally:
            self._running = None

    async def _poll(self) -> None:
        self.polls += 1
        try:
            sample = await self.read_sample()
        except DeviceError as exc:
            self.failures += 1
            if not self.failing:
                self.failing = True
                log.warning("device_down device=%s reason=%r", self.device.name, exc.reason)
            return
        if self.failing:
            self.failing = False
            log.info("device_up device=%s", self.device.name)
        if sample.points:
            self.sink(sample)

    @property
    def worst_case_s(self) -> float:
        """The longest one poll can take: every request timing out on every try."""
        cfg = self.device.modbus
        return len(self.plan) * cfg.timeout_s * (cfg.retries + 1)

    async def finish(self) -> None:
        """Let a poll in progress complete (bounded by worst_case_s), so its sample is kept."""
        task = self._running
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait({task}, timeout=self.worst_case_s + 1.0)


def build_pollers(
    devices: Sequence[DeviceConfig], sink: Callable[[Sample], None]
) -> tuple[list[DevicePoller], dict[EndpointKey, Endpoint]]:
    """One poller per device, one endpoint per distinct connection."""
    endpoints: dict[EndpointKey, Endpoint] = {}
    pollers = []
    for device in devices:
        key = endpoint_key(device.modbus)
        if key not in endpoints:
            endpoints[key] = Endpoint(device.modbus)
        pollers.append(DevicePoller(device, endpoints[key], sink))
    return pollers, endpoints
