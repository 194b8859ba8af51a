"""How configuration problems are told: one line each, by key path, devices and points named.

`devices[0] (meter-1).points[4] (Energy).type: ...` lets the operator find the line in a long
file without counting tables; problems are sorted device by device, and a key whose TOML type
was already refused is not reported a second time by the lenient validation.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from gatewayd.config_rules import Loc, Problem


def key_path(loc: Loc, data: dict[str, Any] | None = None) -> str:
    """Render an error location as the operator writes it: `devices[2].points[5].type`.

    With the raw config, devices and points are also named: `devices[2] (meter-3).points[5]
    (Energy).type`, so a problem in a long file is found without counting tables.
    """
    out = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            label = node.get("name", node.get("id")) if isinstance(node, dict) else None
            if isinstance(label, str) and label:
                out += f" ({label})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def pydantic_problems(exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors(include_url=False, include_input=False):
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append((tuple(error["loc"]), message))
    return problems


def render(problems: list[Problem], data: dict[str, Any]) -> list[str]:
    """One line per problem, device by device; a key the strict check named is named once, and
    a rule both pydantic and config_salvage told (the first a model raises) once."""
    strict_locs: set[Loc] = set()
    seen: set[Problem] = set()
    unique: list[Problem] = []
    for loc, message in problems:
        if loc in strict_locs or (loc, message) in seen:
            continue
        seen.add((loc, message))
        if message.startswith("must be "):
            strict_locs.add(loc)
        unique.append((loc, message))

    def device_index(problem: Problem) -> int:
        loc = problem[0]
        return loc[1] if len(loc) > 1 and loc[0] == "devices" and isinstance(loc[1], int) else -1

    return [
        f"{key_path(loc, data)}: {message}" for loc, message in sorted(unique, key=device_index)
    ]
