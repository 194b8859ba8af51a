"""Answers on an RTU line told apart by their length and CRC, not by the silence between them.

Why: the 3.5-character silence that the standard puts between frames does not survive USB
adapters, converters and TCP: one frame arrives in pieces 50 ms apart, two frames arrive in one
read, a noise byte arrives alone. Counting "a burst after a pause" as a frame let a noise byte or
the second half of a neighbour's answer pass for the answer a unit still owed, and two answers
back to back pass for one. An answer's length follows from its first bytes (function code, byte
count), and its CRC tells a whole frame from a chance run of bytes (1 in 65,536); so every byte
on the line is either part of a frame that checks, or noise.

Only answers to what a master asks here (read functions 1-4, their exceptions, and the fixed-size
write answers) are recognised; a byte that cannot start one of those is noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gatewayd.acquire.plan import ReadRequest

if TYPE_CHECKING:  # pymodbus itself is imported at the first frame (after READY: start-up cost)
    from pymodbus.pdu import ModbusPDU

#: Functions whose answer carries a byte count in its third byte: unit, fc, n, n bytes, CRC.
_COUNTED = frozenset({1, 2, 3, 4, 0x11, 0x17})
#: Functions whose answer has a fixed size: unit, fc, 4 bytes, CRC.
_FIXED_8 = frozenset({5, 6, 8, 15, 16})
#: The longest RTU frame (the standard's 256 bytes); a buffer never needs more than this.
MAX_FRAME = 256


@dataclass(frozen=True)
class Frame:
    """One whole frame from the line, CRC checked: the unit it names and its PDU."""

    unit: int
    function: int
    pdu: bytes  # function code and data, without the unit id and the CRC

    @property
    def is_exception(self) -> bool:
        return bool(self.function & 0x80)


def frame_length(buffer: bytes | bytearray, start: int) -> int | None:
    """The length of an answer frame starting at `start`, 0 if no answer can start there, or
    None if more bytes are needed to tell."""
    available = len(buffer) - start
    if available < 2:
        return None
    function = buffer[start + 1]
    if function & 0x80:
        return 5 if (function & 0x7F) in _COUNTED | _FIXED_8 | {7} else 0
    if function in _FIXED_8:
        return 8
    if function == 7:
        return 5
    if function in _COUNTED:
        if available < 3:
            return None
        count = buffer[start + 2]
        return 5 + count if count else 0
    return 0


def crc_ok(frame: bytes | bytearray) -> bool:
    return crc16(frame[:-2]) == (frame[-2] << 8) | frame[-1]


def crc16(data: bytes | bytearray) -> int:
    """The Modbus CRC as pymodbus computes it (its table; high byte first, as on the wire)."""
    from pymodbus.framer.rtu import FramerRTU

    return int(FramerRTU.compute_CRC(bytes(data)))


class FrameSplitter:
    """Feeds raw bytes in, gives whole frames and counts of noise bytes out, in line order.

    A frame is taken at the first position where a whole one checks; bytes before it are noise.
    Where a frame could start but has not all its bytes yet, nothing after it is looked at until
    more bytes come or the line was quiet for `stale_s` (`expire`): a register answer may carry
    the bytes of a whole other frame, and must not be cut up while its pieces arrive."""

    def __init__(self, stale_s: float = 0.1) -> None:
        self._buffer = bytearray()
        self.stale_s = stale_s
        self._last_byte_at = 0.0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes, now: float = 0.0) -> list[Frame | int]:
        """Frames found, and an int for each run of noise bytes before a frame (or dropped)."""
        self._buffer += data
        if data:
            self._last_byte_at = now
        return self._scan(give_up_waiting=False)

    def expire(self, now: float) -> list[Frame | int]:
        """After `stale_s` of quiet, a frame still waiting for bytes never was one: look on."""
        if not self._buffer or now - self._last_byte_at < self.stale_s:
            return []
        return self._scan(give_up_waiting=True)

    def _scan(self, give_up_waiting: bool) -> list[Frame | int]:
        out: list[Frame | int] = []
        buffer = self._buffer
        consumed = 0
        position = 0
        while position < len(buffer):
            length = frame_length(buffer, position)
            if length and position + length <= len(buffer):
                candidate = buffer[position : position + length]
                if crc_ok(candidate):
                    if position > consumed:
                        out.append(position - consumed)
                    out.append(Frame(candidate[0], candidate[1], bytes(candidate[1:-2])))
                    position += length
                    consumed = position
                    continue
            elif length != 0 and not give_up_waiting:
                break  # a frame may be on its way here: wait for its bytes
            position += 1
        del buffer[:consumed]
        if give_up_waiting and buffer:  # what is left never became a frame: noise
            out.append(len(buffer))
            buffer.clear()
        if len(buffer) > MAX_FRAME:  # no frame can be this long: the oldest bytes are noise
            extra = len(buffer) - MAX_FRAME
            out.append(extra)
            del buffer[:extra]
        return out

    def flush(self) -> int:
        """Give up what is pending as noise; the number of bytes given up."""
        dropped = len(self._buffer)
        self._buffer.clear()
        return dropped


def frame_disagrees(request: ReadRequest, response: ModbusPDU, pdu: bytes) -> str:
    """Why pymodbus's answer is not the frame the line carried, or "" if it is."""
    if response.isError():
        code = int(getattr(response, "exception_code", 0))
        return "" if pdu[0] & 0x80 and pdu[1:2] == bytes([code]) else "answer unlike the frame"
    if pdu[0] & 0x80:
        return "answer unlike the frame"
    data = pdu[2:]
    if request.table in ("coil", "discrete"):
        bits = [bool(data[i // 8] >> (i % 8) & 1) for i in range(min(request.count, 8 * len(data)))]
        same = bits == list(response.bits)[: request.count]
    else:
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        same = words == list(response.registers)
    return "" if same and pdu[1] == len(data) else "answer unlike the frame"
