"""The plain types that cross stages: a sample is what one poll of one sub-device produced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: A measurement point value as it goes on the wire: a scalar, or {"value": v, "quality": q}.
PointValue = bool | int | float | str | dict[str, Any]


@dataclass(frozen=True, slots=True)
class Sample:
    """The readings of one sub-device at one instant (wall-clock epoch milliseconds)."""

    product_key: str
    device_key: str
    ts_ms: int
    points: dict[str, PointValue]


@dataclass(frozen=True, slots=True)
class QueuedSample:
    """A sample as stored in the queue: its row id and the points JSON exactly as it will be sent."""

    id: int
    product_key: str
    device_key: str
    ts_ms: int
    points_json: str
