"""Where a configuration value comes from: the file, or a `GATEWAYD_` variable above it.

pydantic-settings lays the environment over the file key by key, so where a variable is set its
value is the one the daemon uses. `check` must judge that value and say where it came from: an
operator told that `mqtt.port` is wrong looks in the file, and finds either a value that is fine or
one that was never used. So the file's values the environment replaces are not checked, and a
problem in a value the environment gave names the variable (and the value, unless it may be a
secret).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic_settings import BaseSettings

from gatewayd.config_rules import Loc, Problem
from gatewayd.config_variables import EnvironmentSource, known

_MISSING = object()


@dataclass(frozen=True)
class Variable:
    """One environment variable that gives a key (or a whole table, as JSON)."""

    name: str  # as set: the environment's names are not case-sensitive here
    text: str
    parsed: Any  # the text, or what its JSON became (merged with the variables below it)
    known: bool  # whether it names a key of the configuration

    def shown(self, path: tuple[str, ...]) -> str:
        # A JSON table may hold a secret anywhere, and an unknown key may be a misspelt secret,
        # so only the plain text of a known key is shown, and no secret.
        secret = any("secret" in part for part in path)
        if not isinstance(self.parsed, str) or secret or not self.known:
            return self.name
        return f"{self.name}={self.text!r}"

    def own_keys(self) -> list[str]:
        """The keys of the table this variable gives as JSON (none where it gives a value).

        Its own: `parsed` holds the keys of the variables below it too.
        """
        if not isinstance(self.parsed, dict):
            return []
        try:
            value = json.loads(self.text)
        except ValueError:
            return []
        return [str(key).lower() for key in value] if isinstance(value, dict) else []


@dataclass(frozen=True)
class Environment:
    """What the environment gives, nested as Settings sees it, and the variable behind each key."""

    data: dict[str, Any]
    variables: dict[tuple[str, ...], Variable]
    refused: list[Problem]  # variables that cannot be read, each named (config_variables.py)

    def origins(self, loc: Loc, message: str) -> list[str]:
        """The variables behind the value at `loc` (none where that value is the file's)."""
        if not _given(self.data, loc):
            return []
        keys: list[str] = []  # inside an array, only a variable above it can give the value
        for part in loc:
            if not isinstance(part, str):
                break
            keys.append(part)
        above = [path for path in self.variables if list(path) == keys[: len(path)]]
        if above:  # the deepest variable wins, as pydantic-settings merges them
            path = max(above, key=len)
            if path != loc or not isinstance(self.variables[path].parsed, dict):
                return [self.variables[path].shown(path)]
        if any(isinstance(part, int) for part in loc):
            return []
        # A table given key by key, or as JSON merged with the file's: a rule across its keys
        # is the variables' that gave a key its message names, and the file's otherwise.
        found: list[str] = []
        for path, variable in self.variables.items():
            if path[: len(loc)] != loc:
                continue
            gave = [path[len(loc)]] if len(path) > len(loc) else variable.own_keys()
            if any(re.search(rf"\b{re.escape(key)}\b", message) for key in gave):
                found.append(variable.shown(path))
        return found

    def annotate(self, problems: list[Problem]) -> list[Problem]:
        """Each problem in a value the environment gave, with the variables that gave it."""
        out: list[Problem] = []
        for loc, message in problems:
            names = self.origins(loc, message)
            if names:
                message = f"{message} (from the environment: {', '.join(names)})"
            out.append((loc, message))
        return out


def environment(settings: type[BaseSettings]) -> Environment:
    """Read the environment as `settings` will (prefix, nesting, JSON tables, refusals)."""
    source = EnvironmentSource(settings)
    data = source()
    delimiter = source.env_nested_delimiter or "\0"
    prefix = len(source.env_prefix)
    variables: dict[tuple[str, ...], Variable] = {}
    for folded, name in source.names.items():
        path = tuple(folded[prefix:].split(delimiter))
        parsed = _at(data, path)
        if parsed is not _MISSING:
            variables[path] = Variable(name, os.environ[name], parsed, known(settings, path))
    return Environment(data, variables, source.refused)


def overruled(settings: type[BaseSettings], data: Mapping[str, Any]) -> list[str]:
    """The variables whose keys `data` sets itself, given as arguments (which outrank the
    environment): the demo's own ports and paths. Named so that none is ignored silently."""
    variables = environment(settings).variables
    return sorted(v.name for path, v in variables.items() if _given(data, path))


def shadowed(data: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """The file's values that `over` does not replace: tables merge, anything else is replaced."""
    kept = dict(data)
    for key, value in over.items():
        if key not in kept:
            continue
        if isinstance(value, Mapping) and isinstance(kept[key], Mapping):
            kept[key] = shadowed(kept[key], value)
        else:
            del kept[key]
    return kept


def _given(data: Any, loc: Loc) -> bool:
    """Whether the environment gives the value at `loc`: it holds it, or an array around it (an
    array is replaced whole, never merged with the file's, so a key missing in it is missing
    from the environment's)."""
    for part in loc:
        if isinstance(data, list):
            return True
        data = _at(data, (part,))
        if data is _MISSING:
            return False
    return True


def _at(data: Any, loc: Loc) -> Any:
    """The value at `loc` in nested tables and arrays, or _MISSING."""
    for part in loc:
        in_array = isinstance(part, int) and isinstance(data, list) and 0 <= part < len(data)
        if not (in_array or (isinstance(data, dict) and part in data)):
            return _MISSING
        data = data[part]
    return data
