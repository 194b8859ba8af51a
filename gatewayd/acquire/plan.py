"""Points to the fewest Modbus read requests. Pure.

Each request reads one contiguous range of one table. Points are merged into a request while the
range stays within the protocol limit (125 registers, 2000 bits) and the unused registers between
two points do not exceed `max_gap` (reading through gaps saves round trips on slow serial lines,
but some devices answer an exception for unmapped addresses, so the default is not to).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gatewayd.config import PointConfig, Table

MAX_REGISTERS = 125
MAX_BITS = 2000
_TABLE_ORDER: tuple[Table, ...] = ("holding", "input", "coil", "discrete")


@dataclass(frozen=True, slots=True)
class PlacedPoint:
    """A point and where its words start inside the response of its request."""

    point: PointConfig
    offset: int


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read: a table, a start address, a count, and the points it serves."""

    table: Table
    address: int
    count: int
    points: tuple[PlacedPoint, ...]

    @property
    def end(self) -> int:
        return self.address + self.count


def limit_for(table: Table) -> int:
    return MAX_BITS if table in ("coil", "discrete") else MAX_REGISTERS


def plan_reads(points: Iterable[PointConfig], max_gap: int = 0) -> list[ReadRequest]:
    """Group points into read requests, fewest first-fit in address order per table."""
    by_table: dict[Table, list[PointConfig]] = {}
    for point in points:
        by_table.setdefault(point.table, []).append(point)
    requests: list[ReadRequest] = []
    for table in _TABLE_ORDER:
        members = sorted(by_table.get(table, []), key=lambda p: (p.address, p.register_count))
        requests.extend(_plan_table(table, members, max_gap))
    return requests


def _plan_table(table: Table, points: list[PointConfig], max_gap: int) -> list[ReadRequest]:
    limit = limit_for(table)
    out: list[ReadRequest] = []
    group: list[PointConfig] = []
    start = end = 0
    for point in points:
        p_end = point.address + point.register_count
        fits = group and point.address - end <= max_gap and max(end, p_end) - start <= limit
        if group and not fits:
            out.append(_request(table, start, end, group))
            group = []
        if not group:
            start, end = point.address, p_end
        group.append(point)
        end = max(end, p_end)
    if group:
        out.append(_request(table, start, end, group))
    return out


def _request(table: Table, start: int, end: int, group: list[PointConfig]) -> ReadRequest:
    placed = tuple(PlacedPoint(p, p.address - start) for p in group)
    return ReadRequest(table=table, address=start, count=end - start, points=placed)
