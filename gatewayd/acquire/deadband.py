"""Report by exception: leave out a point that did not move more than its deadband. Pure.

On a thin uplink most of a slowly varying meter's readings repeat what the hub already has. A
point with `deadband` (absolute, in the point's unit) or `deadband_percent` (of the last value
sent) is sent only when it moved more than that since the value last sent, or when
`heartbeat_s` passed since then, so the hub can tell a steady value from a dead device. Points
with a deadband of 0 are sent on every change. Comparisons are always against the last value
*sent*, never the last read, so a slow drift is reported once it adds up. Time is monotonic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gatewayd.config import PointConfig
from gatewayd.model import PointValue


@dataclass(frozen=True, slots=True)
class Band:
    """One point's rule: absolute and relative bands (either may be None), heartbeat seconds."""

    absolute: float | None
    percent: float | None
    heartbeat_s: float | None

    def moved(self, last: object, now: object) -> bool:
        """True if `now` differs from `last` by more than the band (any change for non-numbers)."""
        if isinstance(last, dict) and isinstance(now, dict):
            if last.get("quality") != now.get("quality"):
                return True
            last, now = last.get("value"), now.get("value")
        numbers = (int, float)
        is_number = isinstance(last, numbers) and isinstance(now, numbers)
        if not is_number or isinstance(last, bool) or isinstance(now, bool):
            return last != now
        assert isinstance(last, numbers) and isinstance(now, numbers)  # for the type checker
        step = abs(now - last)
        if self.absolute is not None and step > self.absolute:
            return True
        if self.percent is not None and step > abs(last) * self.percent / 100:
            return True
        if self.absolute is None and self.percent is None:
            return step > 0
        return False


class ExceptionFilter:
    """Keeps the last value sent per point; `apply` drops the points that need not go out."""

    def __init__(self, points: Sequence[PointConfig]) -> None:
        self.bands = {
            p.id: Band(p.deadband, p.deadband_percent, p.heartbeat_s)
            for p in points
            if p.deadband is not None or p.deadband_percent is not None
        }
        self._sent: dict[str, tuple[PointValue, float]] = {}
        #: Points left out because they had not moved, in all.
        self.suppressed = 0

    @property
    def active(self) -> bool:
        return bool(self.bands)

    def apply(self, points: dict[str, PointValue], now_s: float) -> dict[str, PointValue]:
        """The points to send of this reading; remembers what is sent."""
        kept: dict[str, PointValue] = {}
        for point_id, value in points.items():
            band = self.bands.get(point_id)
            if band is None:
                kept[point_id] = value
                continue
            last = self._sent.get(point_id)
            due = (
                last is None
                or band.moved(last[0], value)
                or (band.heartbeat_s is not None and now_s - last[1] >= band.heartbeat_s)
            )
            if due:
                kept[point_id] = value
                self._sent[point_id] = (value, now_s)
            else:
                self.suppressed += 1
        return kept
