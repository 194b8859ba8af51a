"""The books of one RTU line: which unit owes which answer, and every frame nobody can explain.

Why a ledger: an RTU answer carries no transaction id, so the only defence against taking one
request's answer for another's is to know, for each unit, whether an answer is still owed, and to
notice every frame that should not be there. The rules (pure bookkeeping, no I/O; the endpoint
feeds it bytes and asks it questions):

- a unit owes one answer per request sent to it; a whole frame (length and CRC, rtu_frames.py)
  from that unit pays one. Noise never pays, and never counts as an answer;
- while a request to unit U is out (a *window*), U's first frame is its answer; a second frame
  from U, or noise, makes the answer doubtful. A frame from another unit V in U's window pays V's
  debt only if U's own answer came and was accepted: if U's answer never came, the frame may be
  U's answer under a wrong unit id (a converter that answers unit 3 as 2), and paying V's debt
  with it would let V's real late answer be taken for V's next request;
- a frame from a unit that owes nothing, outside its own window, is a *stray*: it bumps that
  unit's epoch, so a poll of that unit spanning it is discarded (its answers may be shifted by
  one: a repeater's copy taken for the next read, the real answer arriving after).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gatewayd.acquire.rtu_frames import Frame, FrameSplitter


@dataclass
class Window:
    """What arrived while one request was out."""

    unit: int
    own: list[Frame] = field(default_factory=list)
    foreign: list[Frame] = field(default_factory=list)
    noise: int = 0


class LineLedger:
    def __init__(self) -> None:
        self.splitter = FrameSplitter()
        self.owed: dict[int, int] = {}
        self.owed_since: dict[int, float] = {}
        #: Per unit: frames from it that no request explains (see the module's rules).
        self.epoch: dict[int, int] = {}
        #: Per unit: when its last frame arrived (for waiting until a talkative unit is quiet).
        self.last_frame_at: dict[int, float] = {}
        self.window: Window | None = None
        #: Late answers (from a unit that owed one) thrown away.
        self.late_discarded = 0
        #: Frames no request explains.
        self.strays = 0
        #: Bytes that were no part of a whole frame.
        self.noise_bytes = 0

    def begin(self, unit: int, now: float) -> None:
        """A request to `unit` goes out: it owes one more answer, and a window opens."""
        # Bytes still pending arrived before this request: they cannot be its answer.
        self.noise_bytes += self.splitter.flush()
        self.owed[unit] = self.owed.get(unit, 0) + 1
        self.owed_since.setdefault(unit, now)
        self.window = Window(unit)

    def received(self, data: bytes, now: float) -> bool:
        """Book the bytes; True if an owed answer was paid (someone may be waiting for it)."""
        paid = False
        window = self.window
        for item in self.splitter.feed(data):
            if isinstance(item, int):
                if window is not None:
                    window.noise += item
                self.noise_bytes += item
                continue
            self.last_frame_at[item.unit] = now
            if window is None:
                paid |= self._outside_window(item)
            elif item.unit == window.unit:
                window.own.append(item)
                if len(window.own) == 1:
                    paid |= self._pay(item.unit)
                else:
                    self._stray(item.unit)
            else:
                window.foreign.append(item)
        return paid

    def end(self, accepted: bool) -> Window | None:
        """Close the window; its foreign frames are booked now (see the module's rules)."""
        window, self.window = self.window, None
        if window is None:
            return None
        if window.own:
            # Bytes still pending after an answer came are no part of it.
            pending = self.splitter.flush()
            window.noise += pending
            self.noise_bytes += pending
        for frame in window.foreign:
            if accepted:
                self._outside_window(frame)
            else:
                self._stray(frame.unit)
        return window

    def give_up(self, unit: int) -> None:
        """The answers `unit` owes are taken as lost (the requests or the answers were)."""
        self.owed.pop(unit, None)
        self.owed_since.pop(unit, None)

    def _outside_window(self, frame: Frame) -> bool:
        if self.owed.get(frame.unit):
            self.late_discarded += 1
            return self._pay(frame.unit)
        self._stray(frame.unit)
        return False

    def _pay(self, unit: int) -> bool:
        owed = self.owed.get(unit, 0)
        if not owed:
            return False
        if owed == 1:
            self.give_up(unit)
        else:
            self.owed[unit] = owed - 1
        return True

    def _stray(self, unit: int) -> None:
        self.strays += 1
        self.epoch[unit] = self.epoch.get(unit, 0) + 1
