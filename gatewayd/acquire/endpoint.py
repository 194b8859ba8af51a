"""One Modbus connection (a TCP host, a serial line, an RTU-over-TCP converter), shared in turns.

Why this owns the retries, the timeouts and a byte count of its own: an RTU frame carries no
transaction id, and the answer to a read of holding registers does not say which registers it
holds. pymodbus takes the first frame with the right unit id as the answer, so a slave's late
answer to one request, or an answer it sends twice, becomes another read's value — same unit,
same function, same size — without a trace. On `rtu` and `rtu_over_tcp` this endpoint therefore

- sends one request at a time with its own deadline (pymodbus gets `retries=0` and a long
  timeout it never reaches), and keeps, per unit id, the answers still *owed*: a request counts
  as answered when a frame from that unit arrives, whenever that is;
- never sends to a unit that still owes an answer. It waits up to one timeout for the late
  answer (throwing it away), else fails the read without asking: the next frame from that unit
  would be taken for the new request, whatever it belongs to. An answer owed for longer than
  `OWED_EXPIRY` timeouts (at least `OWED_EXPIRY_MIN_S`) is given up (the request was lost);
- accepts an answer only if exactly the bytes of one answer arrived and the line then stayed
  quiet for the inter-request pause; anything else (a second frame, noise) makes the answer
  doubtful: it is thrown away and the read retried or failed.

Frames that arrive while nothing is asked, from a unit that owes nothing, are counted as strays;
the line settles (quiet for a timeout) before the next request, and the poller discards a poll
during which one arrived. Other units on the line are never held up by a unit that owes. Modbus TCP needs none of this — its transaction id is checked here too, since
pymodbus lets an answer with id 0 match any request — and a failed exchange closes the
connection so the next try starts on a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from gatewayd.acquire.decode import Words
from gatewayd.acquire.plan import ReadRequest
from gatewayd.config import ModbusConfig
from gatewayd.errors import DeviceError, ExceptionResponse

if TYPE_CHECKING:  # pymodbus itself is imported at the first read (see Endpoint.client)
    from pymodbus import ModbusException
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.pdu import ModbusPDU

log = logging.getLogger(__name__)

EndpointKey = tuple[str, ...]

#: Exception codes from a TCP gateway meaning the slave behind it is unreachable, not refusing.
GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_TARGET_FAILED = 0x0B
#: pymodbus's own timeout, never reached: every exchange runs under the device's own deadline.
_LIBRARY_TIMEOUT_S = 3600.0
#: An answer owed for longer than this many timeouts (and OWED_EXPIRY_MIN_S) is given up.
OWED_EXPIRY = 20
OWED_EXPIRY_MIN_S = 10.0
#: How often the pause before a request is extended by bytes arriving in it, at most.
_QUIET_CHECKS = 20
#: A line that keeps talking this long after a failure is reopened.
_MAX_SETTLE_S = 60.0
_FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def endpoint_key(cfg: ModbusConfig) -> EndpointKey:
    """Devices with equal keys share one connection (the same rule `check` applies)."""
    return cfg.line_key()


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
        # (At least 30 ms: converters and USB adapters deliver one frame in pieces up to ~17 ms
        # apart, and a frame split in two must not count as two answers.)
        self._frame_gap_s = max(3.5 * char_s, 0.03)
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._quiet_until = 0.0
        self._awaiting = False  # a request is out (and during the check after its answer)
        self._dirty = False  # bytes came that nobody asked for: let the line go quiet first
        self._last_rx = 0.0
        self._exchange_bytes = 0
        self._sent_tid = 0
        #: Per unit id: requests sent whose answer has not come (timed out, still owed), and
        #: since when. Nothing is sent to a unit that still owes an answer: on RTU, the answer
        #: that comes next would be taken for the new request, whatever it belongs to.
        self._owed: dict[int, int] = {}
        self._owed_since: dict[int, float] = {}
        self._answered = asyncio.Event()  # set when an owed answer arrives
        #: Late answers (frames from a unit that owed one) thrown away.
        self.late_discarded = 0
        #: Frames that arrived while no request was out, from a unit that owed nothing.
        self.strays = 0
        #: Answers refused as doubtful (extra frames, wrong size, wrong function or id).
        self.doubtful = 0

    def __str__(self) -> str:
        return ":".join(self.key)

    @property
    def client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        """pymodbus's client, made at the first read: importing pymodbus and making 200 clients
        costs ~35 ms of CPU, 0.14 s of READY under a quarter-core quota (bench/poll.py)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        from pymodbus import FramerType
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

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
            self._received(data)
            original(data)

        protocol.data_received = counted
        return client

    def _traced_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self._sent_tid = pdu.transaction_id
        return pdu

    def _received(self, data: bytes) -> None:
        now = time.monotonic()
        new_frame = now - self._last_rx > self._frame_gap_s
        self._last_rx = now
        if self._awaiting:
            self._exchange_bytes += len(data)
        if not self.serial_framing or not data:
            return  # TCP answers carry their transaction id: no doubt there
        if not self._awaiting:  # a late answer or a stray: the next request waits for quiet
            self._quiet_until = max(self._quiet_until, now + self._frame_gap_s + self.cfg.pause_s)
        if new_frame:
            unit = data[0]  # a frame's first byte names the unit that sent it
            owed = self._owed.get(unit, 0)
            if owed:  # an answer from a unit that owed one: ours now, or a late one
                self._owed[unit] = owed - 1
                if owed == 1:
                    self._owed_since.pop(unit, None)
                if not self._awaiting:
                    self.late_discarded += 1
            elif not self._awaiting:
                self.strays += 1
                self._dirty = True
            if owed:
                self._answered.set()

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
        from pymodbus import ModbusException  # lazily, as in Endpoint.client

        failure = ""
        doubtful = False  # the last try got an answer that could not be trusted
        for _attempt in range(tries):
            doubtful = False
            if self.serial_framing:
                owing = await self._await_owed(unit_id, limit_s)
                if owing:
                    failure = owing
                    break  # asking again now could only get the late answer for the new question
                if self._dirty:
                    await self._settle(device, limit_s)
            # A late answer arriving meanwhile pushes the quiet further: look again (bounded).
            for _ in range(_QUIET_CHECKS):
                pause = self._quiet_until - time.monotonic()
                if pause <= 0:
                    break
                await asyncio.sleep(pause)
            waited_tail = False
            try:
                response = await self._exchange(request, unit_id, device, limit_s)
                problem = await self._doubt(request, response)
                waited_tail = self.serial_framing
            except TimeoutError:
                failure = f"no answer within {limit_s:g} s"
                if not self.serial_framing:
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
                # After an answer on a serial line the pause was already kept (see _doubt).
                self._quiet_until = time.monotonic() + (0.0 if waited_tail else self.cfg.pause_s)
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

    async def _await_owed(self, unit_id: int, limit_s: float) -> str:
        """Wait up to `limit_s` for an answer `unit_id` still owes; "" once nothing is owed.

        An owed answer older than OWED_EXPIRY timeouts (at least OWED_EXPIRY_MIN_S) is given
        up: the request was lost on the way (noise), or the slave dropped it."""
        if not self._owed.get(unit_id):
            return ""
        since = self._owed_since.get(unit_id, time.monotonic())
        if time.monotonic() - since > max(OWED_EXPIRY * limit_s, OWED_EXPIRY_MIN_S):
            log.info(
                "owed_answer_given_up endpoint=%s unit=%d age_s=%.1f",
                self,
                unit_id,
                time.monotonic() - since,
            )
            self._owed.pop(unit_id, None)
            self._owed_since.pop(unit_id, None)
            return ""
        deadline = time.monotonic() + limit_s
        while self._owed.get(unit_id):
            self._answered.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                age = time.monotonic() - since
                return (
                    f"unit {unit_id} still owes the answer to a request {age:.1f} s ago; not "
                    "asked again until it comes (a late answer would be taken for a new request)"
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._answered.wait()
        self._dirty = True  # let the line go quiet after the late answer
        return ""

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
        self._exchange_bytes = 0
        self._awaiting = True
        if self.serial_framing:  # owed until its answer's first byte arrives
            self._owed[unit_id] = self._owed.get(unit_id, 0) + 1
            self._owed_since.setdefault(unit_id, time.monotonic())
            self._last_rx = 0.0  # what comes after the request starts a new frame
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
        # Exactly the bytes of one answer, then the line quiet for the pause: a second frame
        # (a duplicate, or the real answer after a stale one) or noise shows up in the count.
        await asyncio.sleep(max(self.cfg.pause_s, self._frame_gap_s))
        expected = answer_bytes(request, response)
        if self._exchange_bytes != expected:
            return (
                f"answers out of step on the line ({self._exchange_bytes} bytes, "
                f"expected {expected})"
            )
        return ""

    async def _settle(self, device: str, limit_s: float) -> None:
        """After bytes nobody asked for: wait until the line was quiet for `limit_s`."""
        started = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                wait = max(self._last_rx, started) + limit_s - now
                if wait <= 0:
                    break
                if now - started > _MAX_SETTLE_S:
                    self.client.close()  # a babbling line: start again on a fresh open
                    break
                await asyncio.sleep(wait)
        finally:
            self._dirty = False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def describe(exc: ModbusException) -> str:
    """pymodbus's failure as one short phrase: its own text is long and names its retries."""
    text = str(exc)
    if "device id" in text:
        return "answered by another unit id"
    return f"{type(exc).__name__}: {text}".strip()
