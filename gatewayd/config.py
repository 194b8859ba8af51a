"""The configuration: one TOML file, every key overridable by `GATEWAYD_<SECTION>__<KEY>`.

Validation is strict (`extra="forbid"`, literal choices, cross-field checks) because a gateway that
starts with a silently patched config ships wrong data for months. Every problem is reported with
its key path, e.g. `devices[2].points[5].type`, so the operator can fix the file in one pass.

This module reads the file, lays the environment over it and gathers every problem into one
report; the sections' models are in config_sections.py and config_devices.py (and importable from
here, as the rest of gatewayd does), the rules within one table in config_table_rules.py and
across tables in config_rules.py, which also run on what config_salvage.py keeps of a device
that did not validate.
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any

# tomllib's own parser, compiled (mypyc): a 200-device config parses in 0.07 CPU s instead of
# 0.23, a second of READY under a quarter-core quota (bench/README.md, "Quarter core").
import tomli
from pydantic import Field, ModelWrapValidatorHandler, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gatewayd.config_devices import (
    REGISTER_WIDTH,
    SERIAL_PAUSE_MS,
    ByteOrder,
    DataType,
    DeviceConfig,
    ModbusConfig,
    PointConfig,
    Table,
)
from gatewayd.config_env import environment, shadowed
from gatewayd.config_fields import Section
from gatewayd.config_report import pydantic_problems, render
from gatewayd.config_rules import Problem, device_problems, fleet_problems, size_problems
from gatewayd.config_salvage import valid_parts, whole_parts
from gatewayd.config_sections import (
    MAX_PAYLOAD_BYTES,
    ClockConfig,
    ForwardConfig,
    GatewayConfig,
    MetricsConfig,
    MqttConfig,
    QueueConfig,
)
from gatewayd.config_strict import strict_problems
from gatewayd.config_variables import EnvironmentSource
from gatewayd.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "MAX_PAYLOAD_BYTES",
    "REGISTER_WIDTH",
    "SERIAL_PAUSE_MS",
    "ByteOrder",
    "ClockConfig",
    "DataType",
    "DeviceConfig",
    "ForwardConfig",
    "GatewayConfig",
    "MetricsConfig",
    "ModbusConfig",
    "MqttConfig",
    "PointConfig",
    "QueueConfig",
    "Section",
    "Settings",
    "Table",
    "build_config",
    "load_config",
]

DEFAULT_CONFIG_PATH = Path("/etc/gatewayd/config.toml")

#: The parsed file while `load_config` builds Settings from it (with the environment on top).
_file_data: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "gatewayd_file_data", default=None
)


class Settings(BaseSettings):
    """The whole configuration. Build it with `load_config`, not directly."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix="GATEWAYD_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
    )

    gateway: GatewayConfig
    mqtt: MqttConfig = MqttConfig()
    queue: QueueConfig = QueueConfig()
    forward: ForwardConfig = ForwardConfig()
    metrics: MetricsConfig = MetricsConfig()
    clock: ClockConfig = ClockConfig()
    devices: list[DeviceConfig] = Field(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """Field errors, the file's strict types and the rules across keys, all in one report."""
        strict: list[Problem] = []
        env = environment(cls)
        file_data = _file_data.get()
        if file_data is not None:  # the file's values the environment replaces are never used
            strict = strict_problems(cls, shadowed(file_data, env.data))
        problems: list[Problem] = []
        settings: Settings | None = None
        try:
            settings = handler(data)
        except ValidationError as exc:
            problems += pydantic_problems(exc)
        if settings is not None:
            devices = [whole_parts(n, device) for n, device in enumerate(settings.devices)]
        else:
            raw = data.get("devices") if isinstance(data, dict) else None
            devices = [
                valid_parts(n, d) for n, d in enumerate(raw if isinstance(raw, list) else [])
            ]
        max_bytes = (settings.forward if settings else ForwardConfig()).batch_max_bytes
        for device in devices:
            problems += device_problems(device)
            problems += size_problems(device, max_bytes)
        problems += fleet_problems(devices)
        problems = strict + env.refused + env.annotate(problems)
        if problems:
            raise ConfigError(render(problems, data if isinstance(data, dict) else {}))
        assert settings is not None
        return settings

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment less the variables it cannot read, which are named instead
        # (config_variables.py): pydantic-settings would raise, or ignore them.
        sources: list[PydanticBaseSettingsSource] = [init_settings, EnvironmentSource(settings_cls)]
        file_data = _file_data.get()
        if file_data is not None:
            # Plain TOML values, no models: nothing for pydantic-settings to dump to dicts
            # first (that dump was 15 ms of a 200-device start, ahead of READY).
            sources.append(
                InitSettingsSource(
                    settings_cls, init_kwargs=file_data, nested_model_default_partial_update=False
                )
            )
        return tuple(sources)


def load_config(path: Path | str, **overrides: Any) -> Settings:
    """Read, merge with the environment, and validate; raise ConfigError naming every bad key."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomli.load(handle)  # syntax errors get reported here with line and column
    except FileNotFoundError:
        raise ConfigError([f"file not found: {path}"], str(path)) from None
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror}"], str(path)) from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} on line {line} (TOML is UTF-8)"],
            str(path),
        ) from None
    except tomli.TOMLDecodeError as exc:
        hint = ""
        if path.read_bytes()[:3] == b"\xef\xbb\xbf":
            hint = " (the file starts with a byte-order mark: save it as UTF-8 without BOM)"
        raise ConfigError([f"TOML syntax: {exc}{hint}"], str(path)) from None
    token = _file_data.set(shadowed(data, overrides))  # what the file gives that is used
    try:
        return Settings(**overrides)
    except ConfigError as exc:
        raise ConfigError(exc.problems, str(path)) from None
    except (
        ValidationError
    ) as exc:  # pragma: no cover - the wrap validator turns these into ConfigError
        raise ConfigError(render(pydantic_problems(exc), data), str(path)) from None
    finally:
        _file_data.reset(token)


def build_config(data: dict[str, Any]) -> Settings:
    """Validate a config given as a dict (the demo and tests); environment overrides still apply."""
    try:
        return Settings(**data)
    except (
        ValidationError
    ) as exc:  # pragma: no cover - the wrap validator turns these into ConfigError
        raise ConfigError(render(pydantic_problems(exc), data)) from None
