"""One Modbus connection (a TCP host, a serial line, an RTU-over-TCP converter), shared in turns.

Why this owns the retries and not pymodbus: an RTU frame carries no transaction id, and the answer
to a read of holding registers does not say which registers it holds. If pymodbus re-sends after
a timeout, the slave's late answer to the first try is taken for the second, and the answer to the
second then arrives while the *next* read waits — same unit, same function, same byte count — and
becomes that read's value. So pymodbus gets `retries=0`, and after anything that leaves the line
in doubt (a timeout, an answer from the wrong unit, bytes nobody asked for) this endpoint listens
and throws away whatever arrives until the line has been quiet for `timeout_s`, and only then
sends the next request. Bytes that arrive while no request is out are counted as strays; a poll
during which strays arrived on its line is discarded by the poller rather than trusted.

Modbus TCP needs none of this (transaction ids match answers to requests); there a failed
exchange closes the connection so the next poll starts on a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from gatewayd.acquire.decode import Words
from gatewayd.acquire.plan import ReadRequest
from gatewayd.config import ModbusConfig
from gatewayd.errors import DeviceError, ExceptionResponse

log = logging.getLogger(__name__)

EndpointKey = tuple[str, ...]

#: Exception codes from a TCP gateway meaning the slave behind it is unreachable, not refusing.
GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_TARGET_FAILED = 0x0B
#: A line that keeps talking this many quiet periods after a failure is reopened.
_MAX_SETTLE_PERIODS = 10


def endpoint_key(cfg: ModbusConfig) -> EndpointKey:
    """Devices with equal keys share one connection."""
    if cfg.transport == "rtu":
        return ("rtu", str(cfg.serial_port))
    return (cfg.transport, str(cfg.host), str(cfg.port))


def describe(exc: ModbusException, timeout_s: float) -> str:
    """pymodbus's failure as one short phrase: its own text is long and names its retries."""
    text = str(exc)
    if "No response received" in text:
        return f"no answer within {timeout_s:g} s"
    if "device id" in text:
        return "answered by another unit id"
    return f"{type(exc).__name__}: {text}".strip()


class Endpoint:
    """One Modbus connection; requests on it are serialised, with a pause between them."""

    def __init__(self, cfg: ModbusConfig) -> None:
        self.cfg = cfg
        self.key = endpoint_key(cfg)
        self.serial_framing = cfg.transport in ("rtu", "rtu_over_tcp")
        self.lock = asyncio.Lock()
        self.client = self._make_client()
        self._quiet_until = 0.0
        self._awaiting = False  # a request is out and its answer is wanted
        self._settling = False  # after a failure: whatever arrives is thrown away
        self._dirty = False  # the line may still deliver an answer nobody is waiting for
        self._last_rx = 0.0
        #: Answers (or bytes) thrown away while the line settled after a failure.
        self.late_discarded = 0
        #: Bytes that arrived while no request was out and the line was not settling.
        self.strays = 0

    def __str__(self) -> str:
        return ":".join(self.key)

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        cfg = self.cfg
        if cfg.transport == "rtu":
            return AsyncModbusSerialClient(
                str(cfg.serial_port),
                framer=FramerType.RTU,
                baudrate=cfg.baudrate,
                bytesize=cfg.bytesize,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                timeout=cfg.timeout_s,
                retries=0,
                reconnect_delay=0,
                trace_packet=self._traced,
            )
        framer = FramerType.RTU if cfg.transport == "rtu_over_tcp" else FramerType.SOCKET
        return AsyncModbusTcpClient(
            str(cfg.host),
            port=cfg.port,
            framer=framer,
            timeout=cfg.timeout_s,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._traced,
        )

    def _traced(self, sending: bool, data: bytes) -> bytes:
        """pymodbus shows us every packet; received ones tell whether the line is quiet."""
        if not sending:
            self._last_rx = time.monotonic()
            if self._settling:
                self.late_discarded += 1
            elif not self._awaiting:
                self.strays += 1
                self._dirty = True
        return data

    async def read(self, request: ReadRequest, unit_id: int, device: str) -> Words:
        """Read one request; DeviceError on transport failure, ExceptionResponse on refusal."""
        what = f"{request.table} {request.address}+{request.count}"
        async with self.lock:
            response = await self._read_with_retries(request, unit_id, device, what)
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            if code in (GATEWAY_PATH_UNAVAILABLE, GATEWAY_TARGET_FAILED):
                raise DeviceError(
                    device, f"gateway reports the slave unreachable (exception {code:02X})"
                )
            raise ExceptionResponse(device, code, what)
        if request.table in ("coil", "discrete"):
            bits = list(response.bits)[: request.count]
            if len(bits) < request.count:
                raise DeviceError(device, f"short response for {what}: {len(bits)} bits")
            return bits
        registers = list(response.registers)
        if len(registers) != request.count:
            raise DeviceError(device, f"short response for {what}: {len(registers)} registers")
        return registers

    async def _read_with_retries(
        self, request: ReadRequest, unit_id: int, device: str, what: str
    ) -> ModbusPDU:
        failure = ""
        for _attempt in range(self.cfg.retries + 1):
            if self._dirty:
                await self._settle(device)
            pause = self._quiet_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                return await self._exchange(request, unit_id, device)
            except ModbusException as exc:
                failure = describe(exc, self.cfg.timeout_s)
                if not self.serial_framing:
                    self.client.close()  # TCP: the next try starts on a fresh connection
                else:
                    self._dirty = True  # RTU: the answer may still come; wait it out first
            finally:
                self._quiet_until = time.monotonic() + self.cfg.pause_s
        raise DeviceError(device, f"no valid answer to {what}: {failure}")

    async def _exchange(self, request: ReadRequest, unit_id: int, device: str) -> ModbusPDU:
        if not self.client.connected and not await self.client.connect():
            raise DeviceError(device, f"cannot connect to {self}")
        readers = {
            "holding": self.client.read_holding_registers,
            "input": self.client.read_input_registers,
            "coil": self.client.read_coils,
            "discrete": self.client.read_discrete_inputs,
        }
        self._awaiting = True
        try:
            return await readers[request.table](
                request.address, count=request.count, device_id=unit_id
            )
        finally:
            self._awaiting = False

    async def _settle(self, device: str) -> None:
        """Throw away what the line still delivers until it has been quiet for `timeout_s`."""
        quiet = self.cfg.timeout_s
        self._settling = True
        started = time.monotonic()
        discarded = self.late_discarded
        try:
            while True:
                now = time.monotonic()
                wait = max(self._last_rx, started) + quiet - now
                if wait <= 0:
                    break
                if now - started > quiet * _MAX_SETTLE_PERIODS:
                    self.client.close()  # a babbling line: start again on a fresh open
                    break
                await asyncio.sleep(wait)
        finally:
            self._settling = False
            self._dirty = False
        if self.late_discarded != discarded:
            log.debug(
                "late_answers_discarded endpoint=%s device=%s count=%d",
                self,
                device,
                self.late_discarded - discarded,
            )

    def close(self) -> None:
        self.client.close()
