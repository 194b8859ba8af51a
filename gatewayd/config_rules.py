"""Rules that span several tables (a device's points, the fleet's names and lines).

They run on whatever parts of the file are valid, even when other parts are not (a device read
as `DeviceParts`, config_salvage.py), so one mistake never hides another: a misspelt point type
does not hide two overlapping points of the same device, an unknown key in an endpoint does not
hide its line's settings, and a missing secret file does not hide an interval that is too short.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gatewayd.config_table_rules import line_key, line_settings

if TYPE_CHECKING:
    from gatewayd.config_devices import PointConfig
    from gatewayd.config_salvage import DeviceParts

Loc = tuple[int | str, ...]
Problem = tuple[Loc, str]


def device_problems(device: DeviceParts) -> list[Problem]:
    loc: Loc = ("devices", device.index)
    problems: list[Problem] = list(device.table_problems)
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
    return problems + line_problems(devices)


def line_problems(devices: Sequence[DeviceParts]) -> list[Problem]:
    """Each setting a device on a shared line gives otherwise than the first device that gives
    it validly, named by its key with both values (a bad key is a problem of its own)."""
    problems: list[Problem] = []
    #: per line, per setting: the first device giving it, and its value in force and as shown
    lines: dict[tuple[str, ...], dict[str, tuple[DeviceParts, object, str]]] = {}
    for device in devices:
        line = line_key(device.endpoint)
        if line is None:
            continue
        first = lines.setdefault(line, {})
        for name, (value, shown) in line_settings(device.endpoint).items():
            other, other_value, other_shown = first.setdefault(name, (device, value, shown))
            if value != other_value:
                who = repr(other.name) if other.name else f"devices[{other.index}]"
                problems.append(
                    (
                        ("devices", device.index, "modbus", name),
                        f"{shown}, but {who} on the same line ({':'.join(line)}) has {other_shown}",
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
