"""The configuration schema: one TOML file, every key overridable by `GATEWAYD_<SECTION>__<KEY>`.

Validation is strict (`extra="forbid"`, literal choices, cross-field checks) because a gateway that
starts with a silently patched config ships wrong data for months. Every problem is reported with
its key path, e.g. `devices[2].points[5].type`, so the operator can fix the file in one pass.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

# tomllib's own parser, compiled (mypyc): a 200-device config parses in 0.07 CPU s instead of
# 0.23, a second of READY under a quarter-core quota (bench/README.md, "Quarter core").
import tomli
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gatewayd.config_env import environment, shadowed
from gatewayd.config_report import pydantic_problems, render
from gatewayd.config_rules import (
    DeviceParts,
    Problem,
    device_problems,
    fleet_problems,
    size_problems,
)
from gatewayd.config_strict import strict_problems
from gatewayd.errors import ConfigError
from gatewayd.secrets import read_credential, read_secret_file, refuse_placeholder

DEFAULT_CONFIG_PATH = Path("/etc/gatewayd/config.toml")

#: The hub rejects payloads of 512 KiB or more (enos-protocol.md §2.5); keep a margin for the envelope.
MAX_PAYLOAD_BYTES = 512 * 1024 - 1024

DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Table = Literal["holding", "input", "coil", "discrete"]

#: Registers each numeric type occupies (string: `length`; bool in a register table: one).
REGISTER_WIDTH: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}

#: Default pause between requests on a serial line (see ModbusConfig.inter_request_ms).
SERIAL_PAUSE_MS = 20

#: The parsed file while `load_config` builds Settings from it (with the environment on top).
_file_data: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "gatewayd_file_data", default=None
)


def _topic_safe(key: str) -> str:
    """Keys become MQTT topic levels: a wildcard, a separator or NUL would change the topic."""
    bad = sorted({c for c in key if c in "+#/\0"})
    if bad:
        shown = ", ".join("NUL" if c == "\0" else repr(c) for c in bad)
        raise ValueError(f"must not contain {shown}: it is part of MQTT topics")
    return key


HubKey = Annotated[str, Field(min_length=1), AfterValidator(_topic_safe)]
Secret = Annotated[SecretStr | None, AfterValidator(refuse_placeholder)]
SecretFromFile = Annotated[SecretStr | None, BeforeValidator(read_secret_file)]
SecretFromCredential = Annotated[SecretStr | None, BeforeValidator(read_credential)]


class Section(BaseModel):
    """A TOML section: unknown keys are errors, not ignored typos."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_secret(
    sources: tuple[SecretStr | None, ...], given: set[str], what: str, *, required: bool
) -> SecretStr | None:
    """`device_secret`, `_file` or `_credential` (each already read and checked): at most one."""
    keys = [f"{what}{suffix}" for suffix in ("", "_file", "_credential")]
    named = [key for key in keys if key in given]
    if len(named) > 1:
        raise ValueError(f"set one of {', '.join(named)}, not several")
    secret = next((s for s in sources if s is not None), None)
    if required and not named:
        raise ValueError(f"{what} (or {what}_file, or {what}_credential) is required")
    if named and named[0] == what and (secret is None or not secret.get_secret_value()):
        raise ValueError(f"{what} is empty")
    return secret


class GatewayConfig(Section):
    """The gateway's own identity on the hub."""

    product_key: HubKey
    device_key: HubKey
    device_secret: Secret = None
    #: A file (group gatewayd, mode 0640) holding the secret.
    device_secret_file: SecretFromFile = None
    #: The name of a systemd credential (`LoadCredential=NAME:...` in the unit): recommended.
    device_secret_credential: SecretFromCredential = None

    @model_validator(mode="after")
    def _resolve_secret(self) -> GatewayConfig:
        sources = (self.device_secret, self.device_secret_file, self.device_secret_credential)
        secret = _one_secret(sources, self.model_fields_set, "device_secret", required=True)
        object.__setattr__(self, "device_secret", secret)
        object.__setattr__(self, "device_secret_file", None)
        object.__setattr__(self, "device_secret_credential", None)
        return self

    def secret(self) -> str:
        assert self.device_secret is not None  # guaranteed by the validator
        return self.device_secret.get_secret_value()


class MqttConfig(Section):
    """How to reach the hub's MQTT endpoint."""

    host: str = "127.0.0.1"
    port: int = Field(default=11883, ge=1, le=65535)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_check_hostname: bool = True
    keepalive_s: int = Field(default=60, ge=5, le=3600)
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS)")
        return self


class QueueConfig(Section):
    """Where and how readings are kept until the hub confirms them."""

    path: Path = Path("/var/lib/gatewayd/queue.db")
    max_bytes: int = Field(default=1_073_741_824, ge=1_048_576)
    max_age_s: int = Field(default=2_592_000, ge=60)
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    synchronous: Literal["full", "normal"] = "full"
    commit_interval_ms: int = Field(default=200, ge=1, le=60_000)
    #: While the disk refuses writes (full, read-only), keep at most this many new samples in
    #: memory, the newest; older ones are dropped and counted.
    memory_buffer_samples: int = Field(default=10_000, ge=100, le=10_000_000)
    #: Dead letters (`rejected`) have a bound of their own, so that they never crowd out new
    #: readings: bytes (0 = a quarter of max_bytes) and age since the rejection. The oldest
    #: rejections go first, counted in `rejected_evicted`.
    rejected_max_bytes: int = Field(default=0, ge=0)
    rejected_max_age_s: int = Field(default=2_592_000, ge=60)

    @model_validator(mode="after")
    def _check_rejected(self) -> QueueConfig:
        if self.rejected_max_bytes > self.max_bytes // 2:
            raise ValueError("rejected_max_bytes must not exceed half of max_bytes")
        return self


class ForwardConfig(Section):
    """How the queue is drained to the hub."""

    batch_max_samples: int = Field(default=500, ge=1, le=100_000)
    batch_max_bytes: int = Field(default=262_144, ge=1024, le=MAX_PAYLOAD_BYTES)
    inflight: int = Field(default=4, ge=1, le=64)
    reply_timeout_s: float = Field(default=15.0, gt=0)
    live_max_age_s: float = Field(default=60.0, ge=0)
    allow_offline_sub_device: bool = False
    skip_invalid_measurepoints: bool = False
    retry_min_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> ForwardConfig:
        if self.retry_min_s > self.retry_max_s:
            raise ValueError("retry_min_s must not exceed retry_max_s")
        return self


class ClockConfig(Section):
    """When the wall clock may stamp readings (see gatewayd/acquire/clock.py)."""

    trust: Literal["floor", "ntp", "always"] = "floor"
    floor: str = "2026-11-01"  # no reading can be older than the software that took it
    jump_threshold_s: float = Field(default=2.0, gt=0)
    held_policy: Literal["send", "reject"] = "send"

    @model_validator(mode="after")
    def _check(self) -> ClockConfig:
        try:
            datetime.fromisoformat(self.floor)
        except ValueError:
            raise ValueError(f"floor {self.floor!r} is not a date (YYYY-MM-DD)") from None
        return self


class MetricsConfig(Section):
    """An optional HTTP endpoint for Prometheus (`/metrics`) and health checks (`/healthz`)."""

    listen: str = ""  # "127.0.0.1:9108"; empty: no endpoint

    @model_validator(mode="after")
    def _check(self) -> MetricsConfig:
        if self.listen:
            host, _, port = self.listen.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"listen {self.listen!r} is not host:port")
        return self

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ModbusConfig(Section):
    """One sub-device's Modbus endpoint; devices with the same endpoint share one connection."""

    transport: Literal["tcp", "rtu", "rtu_over_tcp"] = "tcp"
    host: str | None = None
    port: int = Field(default=502, ge=1, le=65535)
    serial_port: str | None = None
    baudrate: int = Field(default=9600, ge=300, le=921_600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit_id: int = Field(default=1, ge=0, le=247)
    timeout_s: float = Field(default=0.5, gt=0, le=60)
    retries: int = Field(default=1, ge=0, le=10)
    #: Silence on the line between two requests. Default: 0 for TCP; 20 ms where an RS-485
    #: line is involved, because many slaves need turnaround time after answering.
    inter_request_ms: int | None = Field(default=None, ge=0, le=10_000)
    #: Unused registers (or bits) a read may span to merge two points into one request.
    max_gap: int = Field(default=0, ge=0, le=100)
    #: A failing device is retried after its interval, doubling up to this.
    backoff_max_s: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> ModbusConfig:
        if self.transport in ("tcp", "rtu_over_tcp") and not self.host:
            raise ValueError(f"host is required with transport = {self.transport!r}")
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError("serial_port is required with transport = 'rtu'")
        if self.unit_id == 0 and self.transport != "tcp":
            raise ValueError(
                "unit_id 0 is the broadcast address on a serial line: no slave answers it"
            )
        return self

    @property
    def pause_s(self) -> float:
        """The pause between requests on this device's line, in seconds."""
        if self.inter_request_ms is not None:
            return self.inter_request_ms / 1000
        return 0.0 if self.transport == "tcp" else SERIAL_PAUSE_MS / 1000

    def line_key(self) -> tuple[str, ...]:
        """Devices with equal keys share one connection (a serial port, or a host and port)."""
        if self.transport == "rtu":  # one port under two names (a udev symlink) is one line
            return ("rtu", os.path.realpath(str(self.serial_port)))
        return (self.transport, str(self.host), str(self.port))

    def line_settings(self) -> tuple[object, ...]:
        """What devices sharing one connection must agree on."""
        if self.transport == "rtu":
            return (self.baudrate, self.parity, self.stopbits, self.bytesize, self.pause_s)
        return (self.pause_s,)


class PointConfig(Section):
    """One measurement point: where it lives in the device and how its registers become a value."""

    id: str = Field(min_length=1)
    table: Table = "holding"
    address: int = Field(ge=0, le=65535)
    type: DataType = "uint16"
    order: ByteOrder = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    length: int = Field(default=0, ge=0, le=125)
    bit: int | None = Field(default=None, ge=0, le=15)
    quality: bool = False
    #: A point that could not be read is left out of the sample ("omit": a null cannot pass a
    #: numeric model on the hub), or sent as {"value": null, "quality": q} ("null", with
    #: `quality = true`, for models that accept it).
    unreadable: Literal["omit", "null"] = "omit"
    #: Report by exception (opt-in): send the point only when it moved more than this since
    #: the value last sent (absolute, in the point's unit; 0: on any change) ...
    deadband: float | None = Field(default=None, ge=0)
    #: ... or more than this percentage of the value last sent ...
    deadband_percent: float | None = Field(default=None, gt=0, le=100)
    #: ... or at least this often all the same, so a steady value is told from a dead device.
    heartbeat_s: float | None = Field(default=None, gt=0, le=86_400)

    @model_validator(mode="after")
    def _check(self) -> PointConfig:
        banded = self.deadband is not None or self.deadband_percent is not None
        if self.heartbeat_s is not None and not banded:
            raise ValueError("heartbeat_s is only for points with deadband or deadband_percent")
        numeric = self.type not in ("bool", "string")
        if not numeric and (self.deadband or self.deadband_percent is not None):
            raise ValueError(
                f"a {self.type} point has no size of change: use deadband = 0 (send on change)"
            )
        if self.unreadable == "null" and not self.quality:
            raise ValueError(
                "unreadable = 'null' needs quality = true (the null carries a quality)"
            )
        if self.table in ("coil", "discrete") and self.type != "bool":
            raise ValueError(f"table {self.table!r} holds bits: type must be 'bool'")
        if self.type == "string" and self.length < 1:
            raise ValueError("type 'string' needs length (registers) of at least 1")
        if self.type != "string" and self.length:
            raise ValueError("length is only for type 'string'")
        if self.bit is not None and not (
            self.type == "bool" and self.table in ("holding", "input")
        ):
            raise ValueError("bit is only for type 'bool' in a register table")
        registers = self.table in ("holding", "input")
        if self.bit is not None and "order" in self.model_fields_set:
            raise ValueError("order is meaningless on a bit of a register: remove it")
        if registers and self.order in ("CDAB", "DCBA"):
            if self.type == "string":
                raise ValueError(
                    f"order {self.order!r} swaps words, but a string is read register by "
                    "register: use 'ABCD' or 'BADC'"
                )
            if self.register_count == 1:
                raise ValueError(
                    f"order {self.order!r} swaps words, but a {self.type} is one register: "
                    "use 'ABCD' or 'BADC'"
                )
        last = self.address + self.register_count - 1
        if last > 65535:
            what = "registers" if registers else "bits"
            raise ValueError(f"{what} {self.address}-{last} run past 65535, the last address")
        return self

    @property
    def register_count(self) -> int:
        """How many registers (or bits, for coil/discrete) the point occupies."""
        if self.type == "string":
            return self.length
        return REGISTER_WIDTH[self.type]


class DeviceConfig(Section):
    """One sub-device: its hub identity, its Modbus endpoint and its points.

    The rules across its points (overlaps, repeated ids, the interval) are in config_rules,
    run by Settings on whatever parts are valid.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    product_key: HubKey
    device_key: HubKey
    device_secret: Secret = None
    device_secret_file: SecretFromFile = None
    device_secret_credential: SecretFromCredential = None
    interval_s: float = Field(default=1.0, ge=0.05, le=86_400)
    modbus: ModbusConfig
    points: list[PointConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _resolve_secret(self) -> DeviceConfig:
        sources = (self.device_secret, self.device_secret_file, self.device_secret_credential)
        secret = _one_secret(sources, self.model_fields_set, "device_secret", required=False)
        object.__setattr__(self, "device_secret", secret)
        object.__setattr__(self, "device_secret_file", None)
        object.__setattr__(self, "device_secret_credential", None)
        return self

    def parts(self, index: int) -> DeviceParts:
        return DeviceParts(
            index=index,
            name=self.name,
            key=(self.product_key, self.device_key),
            interval_s=self.interval_s,
            modbus=self.modbus,
            points=list(self.points),
            point_ids=[p.id for p in self.points],
        )


def _valid_parts(index: int, raw: Any) -> DeviceParts:
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
    with contextlib.suppress(ValidationError):
        parts.modbus = ModbusConfig.model_validate(raw.get("modbus"))
    points = raw.get("points")
    for point in points if isinstance(points, list) else []:
        if isinstance(point, dict) and isinstance(point.get("id"), str):
            parts.point_ids.append(point["id"])
        with contextlib.suppress(ValidationError):
            parts.points.append(PointConfig.model_validate(point))
    return parts


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
            devices = [device.parts(n) for n, device in enumerate(settings.devices)]
        else:
            raw = data.get("devices") if isinstance(data, dict) else None
            devices = [
                _valid_parts(n, d) for n, d in enumerate(raw if isinstance(raw, list) else [])
            ]
        max_bytes = (settings.forward if settings else ForwardConfig()).batch_max_bytes
        for device in devices:
            problems += device_problems(device)
            problems += size_problems(device, max_bytes)
        problems += fleet_problems(devices)
        problems = strict + env.annotate(problems)
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
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
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
