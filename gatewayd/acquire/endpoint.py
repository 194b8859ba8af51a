"""One Modbus connection (a TCP host, a serial line, an RTU-over-TCP converter), shared in turns.

Why this owns the retries, the timeouts and a byte count of its own: an RTU frame carries no
transaction id, and the answer to a read of holding registers does not say which registers it
holds. pymodbus takes the first frame with the right unit id as the answer, so a slave's late
answer to one request, or an answer it sends twice, becomes another read's value — same unit,
same function, same size — without a trace. On `rtu` and `rtu_over_tcp` this endpoint therefore

- sends one request at a time with its own deadline (pymodbus gets `retries=0` and a long
  timeout it never reaches), and counts each request that timed out as an answer still *owed*;
- after a timeout or any doubtful answer, listens and throws away what the line delivers until
  every owed answer arrived (or the line stayed quiet for `LATE_FACTOR` timeouts, or twice the
  longest lateness seen on the line) and then `timeout_s` of quiet, before it sends anything;
- accepts an answer only if exactly one frame of exactly the expected size arrived for it and
  the line then stayed quiet for the inter-request pause; anything else (a second frame, noise)
  makes the answer doubtful: it is thrown away and the read retried or failed.

Bytes that arrive while nothing is asked are counted as strays and the line settles before the
next request. Modbus TCP needs none of this — its transaction id is checked here too, since
pymodbus lets an answer with id 0 match any request — and a failed exchange closes the
connection so the next try starts on a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

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
#: pymodbus's own timeout, never reached: every exchange runs under the device's own deadline.
_LIBRARY_TIMEOUT_S = 3600.0
#: After a timeout, an answer is waited for (and thrown away) until the line has been quiet
#: for this many timeouts, or twice the longest lateness seen on the line if that is longer.
LATE_FACTOR = 3
#: A line that keeps talking this long after a failure is reopened.
_MAX_SETTLE_S = 60.0
_FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def endpoint_key(cfg: ModbusConfig) -> EndpointKey:
    """Devices with equal keys share one connection."""
    if cfg.transport == "rtu":
        return ("rtu", str(cfg.serial_port))
    return (cfg.transport, str(cfg.host), str(cfg.port))


def answer_bytes(request: ReadRequest, response: ModbusPDU) -> int:
    """Size of the RTU frame that carries this answer: unit, function, payload, CRC."""
    if response.isError():
        return 5  # unit, function | 0x80, exception code, CRC
    if request.table in ("coil", "discrete"):
        return 5 + (request.count + 7) // 8
    return 5 + 2 * request.count


class LineOutOfStep(DeviceError):
    """An answer nobody asked for arrived during a poll: its values cannot be trusted.

    Not the device's failure (it may be a neighbour's late answer): the poll is discarded and
    counted, and the device is not backed off."""


class Endpoint:
    """One Modbus connection; requests on it are serialised, with a pause between them."""

    def __init__(self, cfg: ModbusConfig) -> None:
        self.cfg = cfg
        self.key = endpoint_key(cfg)
        self.serial_framing = cfg.transport in ("rtu", "rtu_over_tcp")
        self.lock = asyncio.Lock()
        # A burst of bytes separated by more than this from the last one is a new frame.
        char_s = 11 / cfg.baudrate if cfg.transport == "rtu" else 0.0
        self._frame_gap_s = max(3.5 * char_s, 0.005)
        self.client = self._make_client()
        self._quiet_until = 0.0
        self._awaiting = False  # a request is out (and during the check after its answer)
        self._settling = False  # after a failure: whatever arrives is thrown away
        self._dirty = False  # the line may still deliver something nobody is waiting for
        self._owed = 0  # requests that timed out; their answers may still come
        self._last_rx = 0.0
        self._exchange_bytes = 0
        self._exchange_frames = 0
        self._sent_tid = 0
        self._timed_out_at: list[float] = []  # send times of the owed requests, oldest first
        #: The longest a late answer took from its request so far (learned, never shrinks).
        self.late_s = 0.0
        #: Answers (frames) thrown away while the line settled after a failure.
        self.late_discarded = 0
        #: Frames that arrived while no request was out and the line was not settling.
        self.strays = 0
        #: Answers refused as doubtful (extra frames, wrong size, wrong function or id).
        self.doubtful = 0

    def __str__(self) -> str:
        return ":".join(self.key)

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        cfg = self.cfg
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if cfg.transport == "rtu":
            client = AsyncModbusSerialClient(
                str(cfg.serial_port),
                framer=FramerType.RTU,
                baudrate=cfg.baudrate,
                bytesize=cfg.bytesize,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                timeout=_LIBRARY_TIMEOUT_S,
                retries=0,
                reconnect_delay=0,
                trace_pdu=self._traced_pdu,
            )
        else:
            framer = FramerType.RTU if cfg.transport == "rtu_over_tcp" else FramerType.SOCKET
            client = AsyncModbusTcpClient(
                str(cfg.host),
                port=cfg.port,
                framer=framer,
                timeout=_LIBRARY_TIMEOUT_S,
                retries=0,
                reconnect_delay=0,
                trace_pdu=self._traced_pdu,
            )
        # Count raw bytes as the transport hands them over, before pymodbus frames them: its
        # framer drops what follows the first frame it likes, which is exactly what must be seen.
        # pymodbus clients are their own asyncio protocol (transport.py: "Clients reuse the same
        # object"), so wrapping the instance's data_received sees every byte.
        protocol: Any = client.ctx
        original = protocol.data_received

        def counted(data: bytes) -> None:
            self._received(len(data))
            original(data)

        protocol.data_received = counted
        return client

    def _traced_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self._sent_tid = pdu.transaction_id
        return pdu

    def _received(self, count: int) -> None:
        now = time.monotonic()
        new_frame = now - self._last_rx > self._frame_gap_s
        self._last_rx = now
        if self._awaiting:
            self._exchange_bytes += count
            self._exchange_frames += new_frame
        elif self._settling:
            if new_frame:
                self.late_discarded += 1
                if self._timed_out_at:
                    self.late_s = max(self.late_s, now - self._timed_out_at.pop(0))
                self._owed = max(0, self._owed - 1)
        elif self.serial_framing:  # TCP answers carry their transaction id: no doubt there
            self.strays += new_frame
            self._dirty = True

    async def read(
        self,
        request: ReadRequest,
        unit_id: int,
        device: str,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> Words:
        """Read one request; DeviceError on transport failure, ExceptionResponse on refusal.

        `timeout_s` and `retries` are the device's own (devices sharing a line may differ)."""
        what = f"{request.table} {request.address}+{request.count}"
        timeout = self.cfg.timeout_s if timeout_s is None else timeout_s
        tries = 1 + (self.cfg.retries if retries is None else retries)
        async with self.lock:
            response = await self._read_with_retries(request, unit_id, device, what, timeout, tries)
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            if code in (GATEWAY_PATH_UNAVAILABLE, GATEWAY_TARGET_FAILED):
                raise DeviceError(
                    device, f"gateway reports the slave unreachable (exception {code:02X})"
                )
            raise ExceptionResponse(device, code, what)
        if request.table in ("coil", "discrete"):
            return list(response.bits)[: request.count]
        return list(response.registers)

    async def _read_with_retries(
        self, request: ReadRequest, unit_id: int, device: str, what: str, limit_s: float, tries: int
    ) -> ModbusPDU:
        failure = ""
        doubtful = False  # the last try got an answer that could not be trusted
        for _attempt in range(tries):
            doubtful = False
            if self._dirty or self._owed:
                await self._settle(device, limit_s)
            pause = self._quiet_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                response = await self._exchange(request, unit_id, device, limit_s)
                problem = await self._doubt(request, response)
            except TimeoutError:
                failure = f"no answer within {limit_s:g} s"
                problem = ""
                if self.serial_framing:
                    self._owed += 1
                    self._timed_out_at.append(time.monotonic() - limit_s)
                    self._dirty = True
                else:
                    self.client.close()
                continue
            except ModbusException as exc:
                failure = describe(exc)
                if self.serial_framing:
                    self._dirty = True
                else:
                    self.client.close()
                continue
            finally:
                self._awaiting = False
                self._quiet_until = time.monotonic() + self.cfg.pause_s
            if not problem:
                return response
            failure = problem
            doubtful = True
            self.doubtful += 1
            self._dirty = True
            if not self.serial_framing:
                self.client.close()
        if doubtful:  # the line is out of step, not necessarily this device at fault
            raise LineOutOfStep(device, f"no trustworthy answer to {what}: {failure}")
        raise DeviceError(device, f"no valid answer to {what}: {failure}")

    async def _exchange(
        self, request: ReadRequest, unit_id: int, device: str, limit_s: float
    ) -> ModbusPDU:
        if not self.client.connected:
            try:
                async with asyncio.timeout(limit_s):
                    connected = await self.client.connect()
            except TimeoutError:
                connected = False
            if not connected:
                raise DeviceError(device, f"cannot connect to {self}")
        readers = {
            "holding": self.client.read_holding_registers,
            "input": self.client.read_input_registers,
            "coil": self.client.read_coils,
            "discrete": self.client.read_discrete_inputs,
        }
        self._exchange_bytes = self._exchange_frames = 0
        self._awaiting = True
        async with asyncio.timeout(limit_s):
            return await readers[request.table](
                request.address, count=request.count, device_id=unit_id
            )

    async def _doubt(self, request: ReadRequest, response: ModbusPDU) -> str:
        """Why this answer cannot be trusted, or "" if it can."""
        function = response.function_code & 0x7F
        if function != _FUNCTION_CODES[request.table]:
            return f"answer to another function ({function})"
        if not response.isError():
            got = (
                len(response.bits)
                if request.table in ("coil", "discrete")
                else len(response.registers)
            )
            if got < request.count:
                return f"short answer ({got} of {request.count})"
        if not self.serial_framing:
            if response.transaction_id != self._sent_tid:
                return f"answer to another transaction ({response.transaction_id})"
            return ""
        # Exactly one frame of the expected size, then the line quiet for the pause: a second
        # frame (a duplicate, or the real answer after a stale one) shows up in this window.
        await asyncio.sleep(max(self.cfg.pause_s, self._frame_gap_s * 2))
        expected = answer_bytes(request, response)
        if self._exchange_frames != 1 or self._exchange_bytes != expected:
            return (
                f"answers out of step on the line ({self._exchange_bytes} bytes in "
                f"{self._exchange_frames} frames, expected {expected} in 1)"
            )
        return ""

    async def _settle(self, device: str, limit_s: float) -> None:
        """Throw away what the line still delivers: until every owed answer came (or the line
        was quiet past the longest lateness seen), then `limit_s` (the device's timeout) of quiet."""
        self._settling = True
        started = time.monotonic()
        discarded = self.late_discarded
        give_up_quiet = max(LATE_FACTOR * limit_s, 2 * self.late_s)
        try:
            while True:
                now = time.monotonic()
                quiet_since = max(self._last_rx, started)
                if self._owed and now - quiet_since >= give_up_quiet:
                    self._owed = 0  # those answers are not coming
                    self._timed_out_at.clear()
                need = limit_s if not self._owed else give_up_quiet
                wait = quiet_since + need - now
                if wait <= 0 and not self._owed:
                    break
                if now - started > _MAX_SETTLE_S:
                    self.client.close()  # a babbling line: start again on a fresh open
                    self._owed = 0
                    self._timed_out_at.clear()
                    break
                await asyncio.sleep(max(wait, 0.001))
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


def describe(exc: ModbusException) -> str:
    """pymodbus's failure as one short phrase: its own text is long and names its retries."""
    text = str(exc)
    if "device id" in text:
        return "answered by another unit id"
    return f"{type(exc).__name__}: {text}".strip()
