"""The books of one RTU line: which unit owes which answer, and every frame nobody can explain.

Why a ledger: an RTU answer carries no transaction id, so the only defence against taking one
request's answer for another's is to know, for each unit, which answers are still owed, and to
notice every frame that should not be there. The rules (pure bookkeeping, no I/O; the endpoint
feeds it bytes and asks it questions):

- a unit owes one answer per request sent to it, oldest first; only a whole frame (length and
  CRC, rtu_frames.py) from that unit, of the function and size the owed request asks for, pays
  one. Noise never pays, and never counts as an answer;
- a frame byte for byte the same as one of the unit's recent answers to *another* request is
  suspected to be a copy (a repeater, firmware replaying its buffer): it pays nothing, and in a
  window it is no answer until the read is asked again after the unit was quiet (the endpoint
  does that once). Two reads that really answer the same bytes cost one such check;
- while a request to unit U is out (a *window*), U's first frame is its answer; a second frame
  from U, or noise, makes the answer doubtful. A frame from another unit V in U's window pays V's
  debt only if U's own answer came and was accepted: if U's answer never came, the frame may be
  U's answer under a wrong unit id (a converter that answers unit 3 as 2);
- a frame from a unit that owes nothing, outside its own window, is a *stray*: it bumps that
  unit's epoch, so a poll of that unit spanning it is discarded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gatewayd.acquire.rtu_frames import Frame, FrameSplitter, crc16

#: How many of a unit's recent answers a frame is compared with, to suspect a copy (a device
#: with many reads must not outrun it: a copy of its first answer may land in its last read).
RECENT_ANSWERS = 32


@dataclass(frozen=True)
class Asked:
    """A read request as the line sees it: what its answer must look like."""

    function: int
    address: int
    count: int

    def request_frame(self, unit: int) -> bytes:
        """The bytes of this request on the wire (what a local-echo adapter hands back)."""
        adu = bytes([unit, self.function]) + self.address.to_bytes(2, "big")
        adu += self.count.to_bytes(2, "big")
        return adu + crc16(adu).to_bytes(2, "big")

    def answered_by(self, frame: Frame) -> bool:
        if frame.function == self.function | 0x80:
            return len(frame.pdu) == 2  # function | 0x80, exception code
        if frame.function != self.function:
            return False
        data = 2 * self.count if self.function in (3, 4) else (self.count + 7) // 8
        return len(frame.pdu) == 2 + data and frame.pdu[1] == data


@dataclass
class Window:
    """What arrived while one request was out."""

    unit: int
    asked: Asked
    own: list[Frame] = field(default_factory=list)
    #: Frames from the unit that look like copies of its answers to other requests.
    copies: list[Frame] = field(default_factory=list)
    foreign: list[Frame] = field(default_factory=list)
    noise: int = 0
    #: The request's own bytes: a local-echo RS-485 adapter hands them back, and for some reads
    #: (coils at 768+17) they parse as a whole answer. A frame equal to them is no answer.
    echo: bytes = b""


class LineLedger:
    def __init__(self, stale_s: float = 0.1) -> None:
        self.splitter = FrameSplitter(stale_s)
        self.owed: dict[int, deque[Asked]] = {}
        self.owed_since: dict[int, float] = {}
        #: Per unit: frames from it that no request explains (see the module's rules).
        self.epoch: dict[int, int] = {}
        #: Per unit: when its last frame arrived (for waiting until a talkative unit is quiet).
        self.last_frame_at: dict[int, float] = {}
        #: Per unit: its recent answers and the requests they answered.
        self.recent: dict[int, deque[tuple[bytes, Asked]]] = {}
        #: Per unit: the answer a read may take although it looks like a copy (asked again).
        self.verifying: dict[int, bytes] = {}
        self.window: Window | None = None
        #: Late answers (from a unit that owed one) thrown away.
        self.late_discarded = 0
        #: Frames no request explains (copies included).
        self.strays = 0
        #: Bytes that were no part of a whole frame.
        self.noise_bytes = 0
        #: Frames equal to the request they came after (a local-echo adapter's echo).
        self.echoes = 0

    def begin(self, unit: int, asked: Asked, now: float) -> None:
        """A request to `unit` goes out: it owes one more answer, and a window opens."""
        # Bytes still pending arrived before this request: they cannot be its answer.
        self.noise_bytes += self.splitter.flush()
        self.owed.setdefault(unit, deque()).append(asked)
        self.owed_since.setdefault(unit, now)
        self.window = Window(unit, asked, echo=asked.request_frame(unit))

    def received(self, data: bytes, now: float) -> bool:
        """Book the bytes; True if an owed answer was paid (someone may be waiting for it)."""
        return self._book(self.splitter.feed(data, now), now)

    def expire(self, now: float) -> bool:
        """Book what the splitter gives up waiting for; True if an owed answer was paid."""
        return self._book(self.splitter.expire(now), now)

    def _book(self, items: list[Frame | int], now: float) -> bool:
        paid = False
        window = self.window
        for item in items:
            if isinstance(item, int):
                if window is not None:
                    window.noise += item
                self.noise_bytes += item
                continue
            self.last_frame_at[item.unit] = now
            if window is None:
                paid |= self._outside_window(item)
            elif item.unit == window.unit:
                paid |= self._in_own_window(window, item)
            else:
                window.foreign.append(item)
        return paid

    def _in_own_window(self, window: Window, frame: Frame) -> bool:
        if bytes([frame.unit]) + frame.pdu == window.echo[:-2]:
            self.echoes += 1  # the request itself, handed back: no answer (and no stray)
            window.noise += len(window.echo)  # the read is doubtful: its answer cannot be told
            return False
        if window.own or not window.asked.answered_by(frame):
            window.own.append(frame)  # a second frame, or one that answers something else
            self._stray(frame.unit)
            return False
        if self._looks_like_copy(frame, window.asked):
            window.copies.append(frame)
            return False
        window.own.append(frame)
        self.verifying.pop(frame.unit, None)
        return self._pay(frame)

    def end(self, accepted: bool) -> Window | None:
        """Close the window; its foreign frames are booked now (see the module's rules)."""
        window, self.window = self.window, None
        if window is None:
            return None
        if window.own or window.copies:
            # Bytes still pending after an answer came are no part of it.
            pending = self.splitter.flush()
            window.noise += pending
            self.noise_bytes += pending
        if window.copies and not window.own:  # the read is asked again after a check
            self.verifying[window.unit] = window.copies[0].pdu
        for frame in window.foreign:
            if accepted:
                self._outside_window(frame)
            else:
                self._stray(frame.unit)
        return window

    def take_copy_as_answer(self, unit: int) -> None:
        """No other answer came after a frame that looked like a copy: it was the answer."""
        pdu = self.verifying.get(unit)
        if pdu is not None and self.owed.get(unit):
            self._pay(Frame(unit, pdu[0], pdu))

    def give_up(self, unit: int) -> None:
        """The answers `unit` owes are taken as lost (the requests or the answers were)."""
        self.owed.pop(unit, None)
        self.owed_since.pop(unit, None)

    def _outside_window(self, frame: Frame) -> bool:
        owed = self.owed.get(frame.unit)
        if owed and owed[0].answered_by(frame) and not self._looks_like_copy(frame, owed[0]):
            self.late_discarded += 1
            return self._pay(frame)
        self._stray(frame.unit)
        return False

    def _looks_like_copy(self, frame: Frame, asked: Asked) -> bool:
        if self.verifying.get(frame.unit) == frame.pdu:
            return False  # asked again after a quiet line, and the same answer came
        return any(
            pdu == frame.pdu and other != asked for pdu, other in self.recent.get(frame.unit, ())
        )

    def _pay(self, frame: Frame) -> bool:
        owed = self.owed.get(frame.unit)
        if not owed:
            return False
        asked = owed.popleft()
        if not owed:
            self.give_up(frame.unit)
        recent = self.recent.setdefault(frame.unit, deque(maxlen=RECENT_ANSWERS))
        recent.append((frame.pdu, asked))
        return True

    def _stray(self, unit: int) -> None:
        self.strays += 1
        self.epoch[unit] = self.epoch.get(unit, 0) + 1
