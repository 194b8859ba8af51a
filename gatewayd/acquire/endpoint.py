"""One Modbus connection (a TCP host, a serial line, an RTU-over-TCP converter), shared in turns.

Why this owns the retries, the timeouts and reads the raw bytes itself: an RTU frame carries no
transaction id, and the answer to a read of holding registers does not say which registers it
holds. pymodbus takes the first frame with the right unit id as the answer, so a slave's late
answer to one request, or an answer it sends twice, becomes another read's value — same unit,
same function, same size — without a trace. On `rtu` and `rtu_over_tcp` pymodbus gets
`retries=0` and a timeout it never reaches; this endpoint sends one request at a time under the
device's own deadline, books every byte on the line in a ledger (line_ledger.py: frames cut by
length and CRC, answers owed per unit, frames nobody can explain), never sends to a unit that
owes an answer or that just sent one unasked, and takes an answer only if it was the one whole
frame from the unit in its window, with nothing else, and pymodbus read the same values from it.

Modbus TCP needs none of this — its transaction id is checked here too, since pymodbus lets an
answer with id 0 match any request — and a failed exchange closes the connection so the next try
starts on a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from gatewayd.acquire.decode import Words
from gatewayd.acquire.line_ledger import Asked
from gatewayd.acquire.line_turns import LineTurns
from gatewayd.acquire.local_echo import EchoWatch
from gatewayd.acquire.modbus_client import describe, make_client
from gatewayd.acquire.plan import ReadRequest
from gatewayd.acquire.rtu_frames import frame_disagrees
from gatewayd.config import ModbusConfig
from gatewayd.errors import DeviceError, ExceptionResponse

if TYPE_CHECKING:  # pymodbus itself is imported at the first read (see Endpoint.client)
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.pdu import ModbusPDU

log = logging.getLogger(__name__)

EndpointKey = tuple[str, ...]

#: Exception codes from a TCP gateway meaning the slave behind it is unreachable, not refusing.
GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_TARGET_FAILED = 0x0B
#: How often the pause before a request is extended by bytes arriving in it, at most.
_QUIET_CHECKS = 20
#: Why an answer is asked again: it is the same as the unit's answer to another request.
COPY_SUSPECTED = "the answer is the unit's answer to another request again (a repeater's copy?)"
#: Why no answer on a line that hands back every request can be trusted, and what to do.
ECHO_UNEXPECTED = (
    "the line hands back each request before the answer (a local-echo RS-485 adapter):"
    " set modbus.local_echo = true on this line"
)
_FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
#: pymodbus's read of each table.
_READERS = {
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
    "holding": "read_holding_registers",
    "input": "read_input_registers",
}


def endpoint_key(cfg: ModbusConfig) -> EndpointKey:
    """Devices with equal keys share one connection (the same rule `check` applies)."""
    return cfg.line_key()


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
        self._sent_tid = 0
        #: Serial lines: who owes what, frames nobody can explain, and when to ask (line_turns.py).
        # A frame still waiting for bytes after this much quiet never was one (rtu_frames.py).
        self.turns = LineTurns(str(self), stale_s=max(0.1, 3 * self._frame_gap_s))
        self.ledger = self.turns.ledger
        #: Answers refused as doubtful (extra frames, noise, wrong size, function or id).
        self.doubtful = 0
        #: A local-echo adapter's echo of each request: stripped with `local_echo`, else noticed.
        self.echo = EchoWatch(strip=cfg.local_echo)

    @property
    def late_discarded(self) -> int:
        """Late answers (frames from a unit that owed one) thrown away."""
        return self.ledger.late_discarded

    @property
    def strays(self) -> int:
        """Frames that no request explains."""
        return self.ledger.strays

    def unit_epoch(self, unit_id: int) -> int:
        """Changes whenever a frame from `unit_id` arrives that no request explains."""
        return self.ledger.epoch.get(unit_id, 0)

    async def quiet_after_last_request(self, unit_id: int, timeout_s: float) -> None:
        """Wait until the last request to `unit_id` can no longer be answered (one timeout
        after it went out): a frame from the unit before then is booked in its epoch."""
        if self.serial_framing:
            await self.turns.quiet_after_last_request(unit_id, timeout_s)

    def __str__(self) -> str:  # the port as configured (the key follows symlinks)
        if self.cfg.transport == "rtu":
            return f"rtu:{self.cfg.serial_port}"
        return ":".join(self.key)

    @property
    def client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        """pymodbus's client, made at the first read: importing pymodbus and making 200 clients
        costs ~35 ms of CPU, 0.14 s of READY under a quarter-core quota (bench/poll.py)."""
        if self._client is None:
            self._client = make_client(self.cfg, self._received, self._traced_pdu)
        return self._client

    def _traced_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self._sent_tid = pdu.transaction_id
        return pdu

    def _received(self, data: bytes) -> bytes:
        """Book raw bytes from the line; the ones pymodbus gets (all but a local echo)."""
        now = time.monotonic()
        if not self.serial_framing or not data:
            return data  # TCP answers carry their transaction id: no doubt there
        if self.ledger.window is not None:
            data = self.echo.feed(data)
            if not data:
                return data
        else:  # a late answer or a stray: the next request waits
            self._quiet_until = max(self._quiet_until, now + self._frame_gap_s + self.cfg.pause_s)
        self.turns.received(data, now)
        return data

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
        try:
            return await self._tries(request, unit_id, device, what, limit_s, tries)
        finally:
            self.ledger.verifying.pop(unit_id, None)

    async def _tries(
        self, request: ReadRequest, unit_id: int, device: str, what: str, limit_s: float, tries: int
    ) -> ModbusPDU:
        from pymodbus import ModbusException  # lazily, as in Endpoint.client

        failure = ""
        doubtful = False  # the last try got an answer that could not be trusted
        checked_copy = False
        attempt = 0
        while attempt < tries:
            attempt += 1
            doubtful = False
            if self.serial_framing:
                owing = await self.turns.before_request(unit_id, limit_s)
                if owing:  # after a timeout, the timeout is what the operator must see
                    failure = f"{failure}; then {owing}" if failure else owing
                    break  # asking again now could only get the late answer for the new question
            # A late answer arriving meanwhile pushes the quiet further: look again (bounded).
            for _ in range(_QUIET_CHECKS):
                pause = self._quiet_until - time.monotonic()
                if pause <= 0:
                    break
                await asyncio.sleep(pause)
            waited_tail = False
            accepted = False
            try:
                response = await self._exchange(request, unit_id, device, limit_s)
                problem = await self._doubt(request, response)
                waited_tail = self.serial_framing
                accepted = not problem
            except TimeoutError:
                failure = f"no answer within {limit_s:g} s"
                if not self.serial_framing:
                    self.client.close()
                continue
            except ModbusException as exc:
                failure = describe(exc)
                if self.serial_framing:
                    self.turns.unsettled.add(unit_id)
                else:
                    self.client.close()
                continue
            finally:
                if self.serial_framing:
                    self.ledger.end(accepted)
                # After an answer on a serial line the pause was already kept (see _doubt).
                self._quiet_until = time.monotonic() + (0.0 if waited_tail else self.cfg.pause_s)
            if not problem:
                return response
            failure = problem
            doubtful = True
            self.doubtful += 1
            self.turns.unsettled.add(unit_id)
            if not self.serial_framing:
                self.client.close()
            elif problem == COPY_SUSPECTED and not checked_copy:
                checked_copy = True
                tries += 1  # asked once more, after the unit was quiet, whatever `retries` says
                await self.turns.copy_or_answer(unit_id, limit_s)
        if self.echo.echoes and not self.echo.strip:
            # The line has handed back requests (an adapter does so always): whatever went
            # wrong after that, in this try or an earlier one, the echo is what must be fixed.
            failure = ECHO_UNEXPECTED
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
        read = getattr(self.client, _READERS[request.table])
        if self.serial_framing:  # owed until a whole frame from the unit arrives
            now = time.monotonic()
            asked = Asked(_FUNCTION_CODES[request.table], request.address, request.count)
            self.ledger.begin(unit_id, asked, now)
            self.echo.begin(asked.request_frame(unit_id))
            self.turns.last_send[unit_id] = now
        async with asyncio.timeout(limit_s):
            response: ModbusPDU = await read(
                request.address, count=request.count, device_id=unit_id
            )
            return response

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
        # Exactly one whole frame from the unit, nothing else, and the line quiet for the pause
        # after it: a second frame (a duplicate, or the real answer after a stale one) or noise
        # shows up in the window.
        await asyncio.sleep(max(self.cfg.pause_s, self._frame_gap_s))
        window = self.ledger.window
        if window is None:
            return "no window"  # cannot happen: the window closes after this check
        pending = self.ledger.splitter.pending
        if window.copies and not window.own and not window.noise and not pending:
            return COPY_SUSPECTED
        if len(window.own) != 1 or window.noise or pending:
            return (
                f"answers out of step on the line ({len(window.own)} frames from the unit, "
                f"{window.noise + pending} bytes of noise)"
            )
        return frame_disagrees(request, response, window.own[0].pdu)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
