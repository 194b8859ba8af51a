"""The plain types that cross stages: a sample is what one poll of one sub-device produced."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

#: A measurement point value as it goes on the wire: a scalar, or {"value": v, "quality": q}.
PointValue = bool | int | float | str | dict[str, Any]


class Quality(IntEnum):
    """The `quality` reported for points configured with `quality = true` (the hub takes 0..9).

    These are gatewayd's own codes; a bad quality goes with `"value": null`.
    """

    GOOD = 0
    NOT_FINITE = 1  # the device sent NaN or infinity
    UNDECODABLE = 2  # the registers do not form a value of the configured type
    DEVICE_EXCEPTION = 3  # the device answered the read with a Modbus exception


@dataclass(frozen=True, slots=True)
class Sample:
    """The readings of one sub-device at one instant (wall-clock epoch milliseconds)."""

    product_key: str
    device_key: str
    ts_ms: int
    points: dict[str, PointValue]
    #: Set while the wall clock is not trusted: the boot and monotonic time of the reading.
    held_boot: str | None = None
    mono_ms: int | None = None


class QueuedSample(NamedTuple):
    """A sample as stored in the queue: its row id and the points JSON exactly as it will be sent.

    A named tuple, not a frozen dataclass: the drain builds one per row, hundreds of thousands a
    second, and a tuple is made from the database row three times faster."""

    id: int
    product_key: str
    device_key: str
    ts_ms: int
    points_json: str
