"""A device as the rules across keys read it, whole or salvaged from a table that did not validate.

pydantic gives up on a table at its first kind of failure: a field error (an unknown key, a bad
value) keeps the model's own rules from running, and one of those rules failing drops the whole
table. Either way the rest of the table was fine and still has problems to tell. So a table that
did not validate is taken apart here, each key validated on its own, and every rule runs on the
keys that were fine: the rules within the table (config_table_rules.py, told here for the
tables pydantic stopped before them) and those across points and devices (config_rules.py, on
`DeviceParts`). A misspelt key never hides an overlap, a short interval or a line mismatch.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from gatewayd.config_devices import DeviceConfig, ModbusConfig, PointConfig
from gatewayd.config_fields import one_secret
from gatewayd.config_rules import Loc, Problem
from gatewayd.config_table_rules import Values, endpoint_rules, point_rules, register_count

_SECRET_ORDER = ("device_secret", "device_secret_file", "device_secret_credential")
_SECRETS = frozenset(_SECRET_ORDER)
#: What a point must have valid to have a place in the register map (and a name in a message);
#: a string of no registers has none.
_PLACEMENT = frozenset(("id", "table", "address", "type", "length", "bit"))


@dataclass
class DeviceParts:
    """The valid parts of one `[[devices]]` table (None or empty where they are not)."""

    index: int
    name: str | None = None
    key: tuple[str, str] | None = None
    interval_s: float | None = None
    #: The endpoint's valid keys (defaults where not given): a bad port or an unknown key
    #: leaves its timing and its line settings to be checked.
    endpoint: Values = field(default_factory=dict)
    #: The points whose id and place in the register map are valid: whole, or built from the
    #: valid keys (a bad key other than those then holds its default, e.g. quality = false).
    points: list[PointConfig] = field(default_factory=list)
    point_ids: list[str] = field(default_factory=list)
    #: The rules within the device's own tables that pydantic did not get to (a field error came
    #: first) or told only the first of (a model raises one); render() drops the one told twice.
    table_problems: list[Problem] = field(default_factory=list)

    @property
    def timing(self) -> tuple[float, int] | None:
        """modbus.timeout_s and retries, which the interval is measured against."""
        timeout_s, retries = self.endpoint.get("timeout_s"), self.endpoint.get("retries")
        if timeout_s is None or retries is None:
            return None
        return float(timeout_s), int(retries)


def whole_parts(index: int, device: DeviceConfig) -> DeviceParts:
    """A device that validated: all of it."""
    return DeviceParts(
        index=index,
        name=device.name,
        key=(device.product_key, device.device_key),
        interval_s=device.interval_s,
        endpoint=device.modbus.__dict__,  # the model's values by key, read only
        points=list(device.points),
        point_ids=[p.id for p in device.points],
    )


def valid_parts(index: int, raw: Any) -> DeviceParts:
    """What can be salvaged from a device table that did not validate as a whole."""
    parts = DeviceParts(index=index)
    if not isinstance(raw, dict):
        return parts
    name, pk, dk = raw.get("name"), raw.get("product_key"), raw.get("device_key")
    parts.name = name if isinstance(name, str) else None
    parts.key = (pk, dk) if isinstance(pk, str) and isinstance(dk, str) else None
    interval = raw.get("interval_s", DeviceConfig.model_fields["interval_s"].default)
    if isinstance(interval, int | float) and not isinstance(interval, bool):
        parts.interval_s = float(interval)
    loc: Loc = ("devices", index)
    parts.table_problems += [(loc, message) for message in _secret_rules(raw)]
    modbus = raw.get("modbus")
    try:
        parts.endpoint = ModbusConfig.model_validate(modbus).__dict__
    except ValidationError:
        parts.endpoint = valid_keys(ModbusConfig, modbus)
        parts.table_problems += [((*loc, "modbus"), m) for m in endpoint_rules(parts.endpoint)]
    points = raw.get("points")
    for n, point in enumerate(points if isinstance(points, list) else []):
        if isinstance(point, dict) and isinstance(point.get("id"), str):
            parts.point_ids.append(point["id"])
        try:
            parts.points.append(PointConfig.model_validate(point))
        except ValidationError:
            values = valid_keys(PointConfig, point)
            given = set(point) if isinstance(point, dict) else set()
            messages = point_rules(values, given)
            parts.table_problems += [((*loc, "points", n), m) for m in messages]
            if values.keys() >= _PLACEMENT and (register_count(values) or 0) > 0:
                parts.points.append(PointConfig.model_construct(given & values.keys(), **values))
    return parts


def _secret_rules(raw: dict[str, Any]) -> list[str]:
    """The device's own rule (one secret, not empty), where its three secret keys are valid."""
    values = valid_keys(DeviceConfig, raw, _SECRETS)
    if values.keys() < _SECRETS:
        return []
    try:
        one_secret(
            tuple(values[k] for k in _SECRET_ORDER), set(raw), "device_secret", required=False
        )
    except ValueError as exc:
        return [str(exc)]
    return []


def valid_keys(model: type[BaseModel], raw: Any, only: Set[str] | None = None) -> dict[str, Any]:
    """Each key of `model` (or `only` those) whose value in `raw` is valid on its own; its
    default where `raw` does not give it. A key given but not valid, or required and missing,
    is left out."""
    if not isinstance(raw, Mapping):
        return {}
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if only is not None and name not in only:
            continue
        if name not in raw:
            if not info.is_required():
                values[name] = info.get_default(call_default_factory=True)
            continue
        with contextlib.suppress(ValidationError):
            values[name] = _key_adapter(model, name).validate_python(raw[name])
    return values


@functools.cache
def _key_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """One key's type and bounds (built once, and only for a table that did not validate)."""
    info = model.model_fields[name]
    typed: Any = Annotated[info.annotation, info]  # a type built at run time
    return TypeAdapter(typed)
