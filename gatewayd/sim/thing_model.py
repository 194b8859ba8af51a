"""Thing models for the hub simulator: which points a product defines and their value types. Pure.

The real hub refuses a measurement point its product's model does not define, or a value of the
wrong type, with 1204 (enos-protocol.md §2.4). A model file (TOML or JSON) maps product keys to
points; a point is a type name or a table:

    [subPK]
    Power = "float"                                  # int, float, double, bool, string,
    Seq = "int"                                      # enum, timestamp
    Temp = { type = "float", quality = true }        # also takes {"value": v, "quality": q}
    Phase = { type = "struct", fields = { a = "float", b = "int" } }
    Branch = { type = "array", items = "float" }

`model_from_settings` derives the model a gateway config implies (what its points decode to).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewayd.config import PointConfig, Settings

SCALAR_TYPES = frozenset({"int", "float", "double", "bool", "string", "enum", "timestamp"})
#: Internal: a point whose id is modelled but whose type is not (`HubSimulator.set_model`).
ANY_TYPE = "any"
_INTEGER_TYPES = frozenset({"int", "enum", "timestamp"})
#: §2.4: the quality flag is an integer from 0 to 9.
QUALITY_RANGE = range(0, 10)


@dataclass(frozen=True)
class PointType:
    """The model's definition of one point (or of a struct field / array item)."""

    type: str
    quality: bool = False
    fields: Mapping[str, PointType] = field(default_factory=dict)
    items: PointType | None = None


#: product key -> point id -> definition
ThingModel = dict[str, dict[str, PointType]]


def parse_point(spec: Any, where: str) -> PointType:
    """A point definition from its file form; ValueError naming `where` if it is not one."""
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a type name or a table, got {spec!r}")
    unknown = set(spec) - {"type", "quality", "fields", "items"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    kind = spec.get("type")
    quality = spec.get("quality", False)
    if not isinstance(quality, bool):
        raise ValueError(f"{where}.quality: expected true or false")
    if kind == "struct":
        fields = spec.get("fields")
        if not isinstance(fields, Mapping) or not fields:
            raise ValueError(f"{where}: a struct needs a table of fields")
        parsed = {str(k): parse_point(v, f"{where}.fields.{k}") for k, v in fields.items()}
        return PointType("struct", quality, parsed)
    if kind == "array":
        if "items" not in spec:
            raise ValueError(f"{where}: an array needs its item type (items)")
        return PointType("array", quality, items=parse_point(spec["items"], f"{where}.items"))
    if kind not in SCALAR_TYPES:
        allowed = ", ".join(sorted(SCALAR_TYPES | {"struct", "array"}))
        raise ValueError(f"{where}: type {kind!r} is not one of {allowed}")
    if "fields" in spec or "items" in spec:
        raise ValueError(f"{where}: fields/items are for struct/array points only")
    return PointType(str(kind), quality)


def parse_model(data: Any) -> ThingModel:
    """A model from its file form: product key -> point id -> definition."""
    if not isinstance(data, Mapping) or not data:
        raise ValueError("a model maps product keys to their points")
    model: ThingModel = {}
    for product, points in data.items():
        if not isinstance(points, Mapping):
            raise ValueError(f"{product}: expected a table of points")
        model[str(product)] = {
            str(pid): parse_point(spec, f"{product}.{pid}") for pid, spec in points.items()
        }
    return model


def load_model(path: Path) -> ThingModel:
    """Read a model file: `.json` is JSON, anything else TOML; ValueError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
        return parse_model(data)
    except (OSError, ValueError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ValueError(f"model {path}: {exc}") from None


def point_type_of(point: PointConfig) -> PointType:
    """The model type a configured point's decoded value has (see gatewayd/acquire/decode.py:
    integers stay integers unless a scale or offset applies)."""
    if point.type in ("bool", "string"):
        return PointType(point.type, point.quality)
    if point.type.startswith("float") or point.scale != 1.0 or point.offset != 0.0:
        return PointType("float", point.quality)
    return PointType("int", point.quality)


def model_from_settings(settings: Settings) -> ThingModel:
    """The model a gateway config implies, product by product (points of devices sharing a
    product are merged; an id that is int on one and float on another becomes float)."""
    model: ThingModel = {}
    for device in settings.devices:
        points = model.setdefault(device.product_key, {})
        for point in device.points:
            new = point_type_of(point)
            old = points.get(point.id)
            if old is not None and {old.type, new.type} == {"int", "float"}:
                new = PointType("float", old.quality or new.quality)
            points[point.id] = new
    return model


def value_error(definition: PointType, value: Any) -> str | None:
    """Why `value` does not fit `definition`, or None when it does."""
    if definition.type == ANY_TYPE:
        return None
    if (
        definition.type != "struct"
        and isinstance(value, dict)
        and set(value) == {"value", "quality"}
    ) or (definition.type == "struct" and definition.quality and isinstance(value, dict)):
        if not definition.quality:
            return "has no quality in the model"
        if set(value) != {"value", "quality"}:
            return "a quality point takes {value, quality}"
        quality = value["quality"]
        if isinstance(quality, bool) or quality not in QUALITY_RANGE:
            return f"quality {quality!r} is not an integer 0-9"
        value = value["value"]
    return _plain_error(definition, value)


def _plain_error(definition: PointType, value: Any) -> str | None:
    kind = definition.type
    if value is None:
        return f"null is not a {kind}"
    if isinstance(value, bool):
        return None if kind == "bool" else f"{value!r} is not a {kind}"
    if kind in _INTEGER_TYPES:  # JSON has numbers: 3.0 is an integer, 3.5 is not
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return None if integral else f"{value!r} is not an {kind}"
    if kind in ("float", "double"):
        return None if isinstance(value, int | float) else f"{value!r} is not a {kind}"
    if kind == "string":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if kind == "bool":
        return f"{value!r} is not a bool"
    if kind == "array":
        if not isinstance(value, list):
            return f"{value!r} is not an array"
        assert definition.items is not None
        for index, item in enumerate(value):
            if (why := _plain_error(definition.items, item)) is not None:
                return f"item {index}: {why}"
        return None
    if not isinstance(value, dict):
        return f"{value!r} is not a struct"
    for name, item in value.items():
        if name not in definition.fields:
            return f"field {name!r} is not in the model"
        if (why := value_error(definition.fields[name], item)) is not None:
            return f"field {name!r}: {why}"
    return None


def invalid_points(
    points_model: Mapping[str, PointType], values: Mapping[str, Any]
) -> dict[str, str]:
    """Point id -> why the hub refuses it, for every point of one element that does not fit."""
    errors: dict[str, str] = {}
    for point_id, value in values.items():
        definition = points_model.get(point_id)
        if definition is None:
            errors[point_id] = "is not in the model"
        elif (why := value_error(definition, value)) is not None:
            errors[point_id] = why
    return errors
