"""Which `GATEWAYD_` variables the configuration reads, and what becomes of those it cannot.

pydantic-settings reads `GATEWAYD_<SECTION>__<KEY>`, and a table or the devices array given whole
as JSON, but not as an operator needs: a variable that is not JSON raises (a traceback and exit 1,
which systemd restarts in a loop), one below a key that has no keys is folded into a value of the
wrong type (`devices: Input should be a valid list`, and the file's devices are gone), and one
that names no section is ignored, so a typo leaves the file's value, or a default, in force.
Here each such variable is a problem that names it (never its text: it may hold a secret), and is
left out, so that what the file says under it is still checked and every problem is told at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import get_origin

from pydantic import BaseModel
from pydantic_settings import EnvSettingsSource

from gatewayd.config_rules import Problem
from gatewayd.config_strict import models_in

#: The `GATEWAYD_` variables that are not configuration keys (README, "Configuration").
NOT_CONFIGURATION = {
    "GATEWAYD_CONFIG": "the config file's path where -c is not given",
    "GATEWAYD_TEST_FAULT": "test-only fault injection (runtime/faults.py)",
    "GATEWAYD_SYSTEM_TEST": "tests: `require` fails a system test that cannot run (.ci/run)",
    "GATEWAYD_CHAOS_REPORT": "tests: where the chaos test writes its table",
}


class EnvironmentSource(EnvSettingsSource):
    """The environment as Settings reads it, less the variables named in `refused`."""

    refused: list[Problem]
    #: Each variable read, as pydantic-settings keys it (case folded) and as it was set.
    names: dict[str, str]

    def _load_env_vars(self) -> Mapping[str, str | None]:
        loaded = dict(super()._load_env_vars())
        prefix = self._fold(self.env_prefix)
        delimiter = self.env_nested_delimiter or "\0"
        not_configuration = {self._fold(name) for name in NOT_CONFIGURATION}
        self.refused, self.names = [], {}
        for name, text in os.environ.items():
            folded = self._fold(name)
            if not folded.startswith(prefix) or folded in not_configuration:
                continue
            spelling = Spelling(name, len(prefix), delimiter)
            problem = refusal(self.settings_cls, spelling.path(folded), text, spelling)
            if problem is None:
                self.names[folded] = name
            else:
                self.refused.append(problem)
                loaded.pop(folded, None)
        return loaded

    def _fold(self, name: str) -> str:
        return name if self.case_sensitive else name.lower()


@dataclass(frozen=True)
class Spelling:
    """A variable's name as set, and the names of the keys above it spelt the same way."""

    name: str
    prefix: int  # the length of GATEWAYD_
    delimiter: str

    def path(self, folded: str) -> tuple[str, ...]:
        return tuple(folded[self.prefix :].split(self.delimiter))

    def above(self, path: tuple[str, ...]) -> str:
        """The variable that would give the key at `path` (a leading part of this one's)."""
        return self.name[: self.prefix + len(self.delimiter.join(path))]

    def blame(self) -> str:
        return f" (from the environment: {self.name})"


def refusal(
    settings: type[BaseModel], path: tuple[str, ...], text: str, spelling: Spelling
) -> Problem | None:
    """Why the variable at `path` cannot be read, or None where it can.

    An unknown key inside a section is not refused here: pydantic names it, as it does the file's.
    """
    section = path[0]
    if section not in settings.model_fields:
        hint = ""
        for name in settings.model_fields:  # `mqtt_port`: one underscore where two were meant
            if section.startswith(f"{name}_") and len(section) > len(name) + 1:
                head = spelling.above((name,))
                rest = spelling.name[len(head) + 1 :]
                hint = f" (a key of a section is {head}{spelling.delimiter}{rest}, two underscores)"
        return (section,), f"unknown section{hint}{spelling.blame()}"
    model: type[BaseModel] | None = settings
    array = False
    for depth, key in enumerate(path):
        if model is None:  # the key above holds a value, not keys
            if array:
                whole = spelling.above(path[:depth])
                message = f"an array is given whole, as JSON in {whole}, not key by key"
                return path[:depth], message + spelling.blame()
            return path[:depth], f"not a table: it has no key {key!r}{spelling.blame()}"
        field = model.model_fields.get(key)
        if field is None:
            return None
        model, _ = models_in(field.annotation)
        array = get_origin(field.annotation) is list
    if model is None and not array:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if model is not None and not isinstance(value, dict):
        return path, f"not a JSON object of the table's keys{spelling.blame()}"
    if array and not isinstance(value, list):
        return path, f"not a JSON array of tables{spelling.blame()}"
    return None


def known(settings: type[BaseModel], path: tuple[str, ...]) -> bool:
    """Whether `path` names a key of the configuration (a misspelt one may hold a secret)."""
    model: type[BaseModel] | None = settings
    for key in path:
        field = model.model_fields.get(key) if model is not None else None
        if field is None:
            return False
        model, _ = models_in(field.annotation)
    return True
