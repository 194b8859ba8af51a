"""Rules that span several keys (a device's points, the fleet's names and lines).

They run on whatever parts of the file are valid, even when other parts are not, so one mistake
never hides another: a misspelt point type does not hide two overlapping points of the same
device, and a missing secret file does not hide an interval that is too short.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatewayd.config_devices import DeviceParts, PointConfig

Loc = tuple[int | str, ...]
Problem = tuple[Loc, str]


def device_problems(device: DeviceParts) -> list[Problem]:
    loc: Loc = ("devices", device.index)
    problems: list[Problem] = []
    seen: set[str] = set()
    for point_id in device.point_ids:
        if point_id in seen:
            problems.append((loc, f"point id {point_id!r} appears twice"))
        seen.add(point_id)
    problems += [(loc, message) for message in overlaps(device.points)]
    if device.timing is not None and device.interval_s is not None:
        timeout_s, retries = device.timing
        worst = timeout_s * (retries + 1)
        if device.interval_s < worst:
            problems.append(
                (
                    loc,
                    f"interval_s {device.interval_s:g} is shorter than one failing read "
                    f"(modbus.timeout_s {timeout_s:g} x (retries {retries} + 1) = {worst:g}s)",
                )
            )
    return problems


def overlaps(points: Sequence[PointConfig]) -> list[str]:
    """Two points may share registers only if one of them is a single bit of a register."""
    spans = sorted(
        ((p.table, p.address, p.address + p.register_count, n), p)
        for n, p in enumerate(points)
        if p.bit is None
    )
    found: list[str] = []
    widest: tuple[str, int, PointConfig] | None = None  # the span reaching furthest so far
    for (table, start, end, _), point in spans:
        if widest is not None and widest[0] == table and start < widest[1]:
            a = widest[2]
            found.append(
                f"points {a.id!r} and {point.id!r} overlap in the {table} table (registers "
                f"{a.address}-{a.address + a.register_count - 1} and {start}-{end - 1})"
            )
        if widest is None or widest[0] != table or end > widest[1]:
            widest = (table, end, point)
    return found


def fleet_problems(devices: Sequence[DeviceParts]) -> list[Problem]:
    """Names and hub identities are unique; devices sharing a line agree on its settings."""
    problems: list[Problem] = []
    names: set[str] = set()
    keys: set[tuple[str, str]] = set()
    lines: dict[tuple[str, ...], DeviceParts] = {}
    for device in devices:
        loc: Loc = ("devices", device.index)
        if device.name is not None:
            if device.name in names:
                problems.append((loc, f"device name {device.name!r} appears twice"))
            names.add(device.name)
        if device.key is not None:
            if device.key in keys:
                problems.append((loc, f"device {device.key[0]}/{device.key[1]} appears twice"))
            keys.add(device.key)
        m = device.modbus
        if m is None:
            continue
        line = m.line_key()
        other = lines.setdefault(line, device)
        assert other.modbus is not None
        if other is not device and other.modbus.line_settings() != m.line_settings():
            problems.append(
                (
                    loc,
                    f"devices {other.name!r} and {device.name!r} share {':'.join(line)} but their "
                    "line settings differ (baudrate, parity, stopbits, bytesize, inter_request_ms,"
                    " local_echo)",
                )
            )
    return problems


def size_problems(device: DeviceParts, max_bytes: int) -> list[Problem]:
    """A sample that cannot fit a request alone could never be sent (forward/sizing.py)."""
    if device.key is None or not device.points:
        return []
    from gatewayd.forward.sizing import largest_request_bytes  # sizing knows no config types

    size = largest_request_bytes(device.key[0], device.key[1], device.points)
    if size <= max_bytes:
        return []
    return [
        (
            ("devices", device.index),
            f"one sample can make a request of {size} bytes, over forward.batch_max_bytes="
            f"{max_bytes} (fewer or shorter point ids, or shorter strings)",
        )
    ]
