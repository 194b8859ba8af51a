"""Report by exception: leave out a point that did not move more than its deadband.

On a thin uplink most of a slowly varying meter's readings repeat what the hub already has. A
point with `deadband` (absolute, in the point's unit) or `deadband_percent` (of the last value
sent) is sent only when it moved more than that since the value last sent, or when
`heartbeat_s` passed since then, so the hub can tell a steady value from a dead device. Points
with a deadband of 0 are sent on every change. Comparisons are always against the last value
*sent*, never the last read, so a slow drift is reported once it adds up. Time is monotonic.
No I/O but the sink the caller gives.

A value counts as sent only once the sink took it; and when readings are lost further on
(gatewayd/losses.py: evicted, dropped, dead-lettered, purged), the hub may not have the value
last sent, so the filter forgets every value it sent and the next reading goes out in full.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gatewayd.config import PointConfig
from gatewayd.losses import DeviceKey, Losses
from gatewayd.model import PointValue, Sample


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
    """Keeps the last value sent per point; `select` drops the points that need not go out."""

    def __init__(
        self,
        points: Sequence[PointConfig],
        losses: Losses | None = None,
        device: DeviceKey = ("", ""),
    ) -> None:
        """`losses`: readings lost after they were handed on (None: never any); `device`: the
        keys of the device whose points these are (a dead letter names its device)."""
        self.bands = {
            p.id: Band(p.deadband, p.deadband_percent, p.heartbeat_s)
            for p in points
            if p.deadband is not None or p.deadband_percent is not None
        }
        self._sent: dict[str, tuple[PointValue, float]] = {}
        self.losses = losses
        self.device = device
        self._losses_seen = losses.serial if losses is not None else 0
        #: Points left out because they had not moved, in all.
        self.suppressed = 0
        #: Times every value sent was forgotten because readings were lost further on.
        self.resets = 0

    @property
    def active(self) -> bool:
        return bool(self.bands)

    def hand_on(self, sample: Sample, now_s: float, sink: Callable[[Sample], None]) -> None:
        """Give `sink` what must go out of `sample` (nothing if no point must); its values count
        as sent only once the sink returned: one that raises leaves them unsent."""
        if self.active:
            sample = dataclasses.replace(sample, points=self.select(sample.points, now_s))
        if sample.points:  # a sample whose every point was left out is not stored
            sink(sample)
            self.sent(sample.points, now_s)

    def select(self, points: dict[str, PointValue], now_s: float) -> dict[str, PointValue]:
        """The points of this reading to send; nothing is remembered until `sent`."""
        self._forget_if_lost()
        kept: dict[str, PointValue] = {}
        for point_id, value in points.items():
            band = self.bands.get(point_id)
            last = self._sent.get(point_id)
            if (
                band is None
                or last is None
                or band.moved(last[0], value)
                or (band.heartbeat_s is not None and now_s - last[1] >= band.heartbeat_s)
            ):
                kept[point_id] = value
            else:
                self.suppressed += 1
        return kept

    def sent(self, points: dict[str, PointValue], now_s: float) -> None:
        """These points were handed on: the references the next readings are compared with."""
        for point_id, value in points.items():
            if point_id in self.bands:
                self._sent[point_id] = (value, now_s)

    def apply(self, points: dict[str, PointValue], now_s: float) -> dict[str, PointValue]:
        """`select`, with what it keeps counted as sent at once."""
        kept = self.select(points, now_s)
        self.sent(kept, now_s)
        return kept

    def _forget_if_lost(self) -> None:
        losses = self.losses
        if losses is None or losses.serial == self._losses_seen:
            return
        lost = losses.lost_since(self.device, self._losses_seen)
        self._losses_seen = losses.serial
        if lost and self._sent:
            self._sent.clear()
            self.resets += 1
            losses.announce()
