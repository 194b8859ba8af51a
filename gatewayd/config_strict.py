"""Strict types for what the TOML file says: `port = "5020"` is an error, not a silent 5020.

pydantic converts text to numbers, which the environment needs (every environment variable is
text) but the file does not: TOML has numbers, and a quoted one is a mistake that should be named.
So the file's values are checked against the schema's types here, before the lenient validation.
"""

from __future__ import annotations

import functools
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr

from gatewayd.config_rules import Loc, Problem

_KIND_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "text",
    "table": "a table",
    "array": "an array",
}
_LOOKS_SCALAR = re.compile(r"[-+]?[0-9][0-9_]*(\.[0-9_]+)?([eE][-+]?[0-9]+)?|true|false")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _accepted(annotation: Any) -> set[str] | None:
    """The TOML kinds a field accepts; None: no opinion (left to pydantic)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        kinds: set[str] = set()
        for arg in get_args(annotation):
            if arg is type(None):
                continue
            more = _accepted(arg)
            if more is None:
                return None
            kinds |= more
        return kinds
    if origin is Literal:
        return {_kind(value) for value in get_args(annotation)}
    if origin is list:
        return {"array"}
    if annotation is bool:
        return {"bool"}
    if annotation is int:
        return {"int"}
    if annotation is float:
        return {"int", "float"}
    if annotation in (str, Path, SecretStr):
        return {"str"}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {"table"}
    return None


def models_in(annotation: Any) -> tuple[type[BaseModel] | None, type[BaseModel] | None]:
    """(model of a table, model of an array's elements) the annotation names, if any."""
    for arg in (annotation, *get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg, None
        if get_origin(arg) is list:
            (element,) = get_args(arg)
            if isinstance(element, type) and issubclass(element, BaseModel):
                return None, element
    return None, None


_FieldKinds = tuple[set[str] | None, type[BaseModel] | None, type[BaseModel] | None]


@functools.cache
def _schema(model: type[BaseModel]) -> dict[str, _FieldKinds]:
    """Per field: accepted kinds, model of a table, model of an array's elements (worked out once:
    a config of 100,000 points asks 600,000 times)."""
    return {
        name: (_accepted(field.annotation), *models_in(field.annotation))
        for name, field in model.model_fields.items()
    }


def strict_problems(model: type[BaseModel], data: dict[str, Any], loc: Loc = ()) -> list[Problem]:
    """Every value in `data` whose TOML type the schema does not take as it is."""
    problems: list[Problem] = []
    schema = _schema(model)
    for key, value in data.items():
        found = schema.get(key)
        if found is None:
            continue  # an unknown key: pydantic names it
        accepted, table, element = found
        kind = _kind(value)
        if accepted is not None and kind not in accepted:
            problems.append(((*loc, key), _message(accepted, kind, value)))
            continue
        if table is None and element is None:
            continue
        here = (*loc, key)
        if table is not None and isinstance(value, dict):
            problems += strict_problems(table, value, here)
        if element is not None and isinstance(value, list):
            for n, item in enumerate(value):
                if isinstance(item, dict):
                    problems += strict_problems(element, item, (*here, n))
    return problems


def _message(accepted: set[str], kind: str, value: Any) -> str:
    wanted = " or ".join(sorted(_KIND_NAMES.get(k, k) for k in accepted - {"int"} or accepted))
    if accepted == {"int"}:
        wanted = "an integer"
    message = f"must be {wanted}, not {_KIND_NAMES.get(kind, kind)}"
    # Only a value that looks like a number or boolean is shown: text may be a secret.
    if kind == "str" and accepted & {"int", "float", "bool"} and _LOOKS_SCALAR.fullmatch(value):
        message += f": write {value} without quotes"
    return message
