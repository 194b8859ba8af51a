"""The sub-devices' sections: each device's identity, its Modbus endpoint and its points.

One model per `[[devices]]` table, `[devices.modbus]` and `[[devices.points]]`, each key with its
bounds and the rules within one point or endpoint (type against table, register count, byte order).
The rules across points and devices (overlaps, repeated ids, shared lines) are in config_rules.py
and read a device as `DeviceParts`: all of it when it validated (`DeviceConfig.parts`), what can
be salvaged when it did not (`valid_parts`), so that one mistake never hides another.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from gatewayd.config_fields import (
    HubKey,
    Secret,
    SecretFromCredential,
    SecretFromFile,
    Section,
    settle_device_secret,
)

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
    #: The RS-485 adapter hands every request back (2-wire, receiver always on): the request's
    #: own bytes come first on the line and are no part of the answer.
    local_echo: bool = False

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
        if self.local_echo and self.transport != "rtu":
            raise ValueError("local_echo is a serial adapter's: it needs transport = 'rtu'")
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
            return (
                self.baudrate,
                self.parity,
                self.stopbits,
                self.bytesize,
                self.pause_s,
                self.local_echo,
            )
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
        settle_device_secret(self, required=False)
        return self

    def parts(self, index: int) -> DeviceParts:
        return DeviceParts(
            index=index,
            name=self.name,
            key=(self.product_key, self.device_key),
            interval_s=self.interval_s,
            modbus=self.modbus,
            timing=(self.modbus.timeout_s, self.modbus.retries),
            points=list(self.points),
            point_ids=[p.id for p in self.points],
        )


@dataclass
class DeviceParts:
    """The valid parts of one `[[devices]]` table (None or missing where they are not)."""

    index: int
    name: str | None = None
    key: tuple[str, str] | None = None
    interval_s: float | None = None
    modbus: ModbusConfig | None = None
    #: modbus.timeout_s and retries, which the interval is measured against: valid even where
    #: another key of the endpoint (a port, a transport) is not.
    timing: tuple[float, int] | None = None
    points: list[PointConfig] = field(default_factory=list)
    point_ids: list[str] = field(default_factory=list)


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
    with contextlib.suppress(ValidationError):
        parts.modbus = ModbusConfig.model_validate(raw.get("modbus"))
    if parts.modbus is not None:
        parts.timing = (parts.modbus.timeout_s, parts.modbus.retries)
    else:
        parts.timing = _timing(raw.get("modbus"))
    points = raw.get("points")
    for point in points if isinstance(points, list) else []:
        if isinstance(point, dict) and isinstance(point.get("id"), str):
            parts.point_ids.append(point["id"])
        with contextlib.suppress(ValidationError):
            parts.points.append(PointConfig.model_validate(point))
    return parts


def _timing(raw: Any) -> tuple[float, int] | None:
    """timeout_s and retries of an endpoint that did not validate, where both are valid alone."""
    if not isinstance(raw, dict):
        return None
    try:
        timeout_s = _field_adapter("timeout_s").validate_python(
            raw.get("timeout_s", ModbusConfig.model_fields["timeout_s"].default)
        )
        retries = _field_adapter("retries").validate_python(
            raw.get("retries", ModbusConfig.model_fields["retries"].default)
        )
    except ValidationError:
        return None
    return float(timeout_s), int(retries)


@functools.cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    """One ModbusConfig field's type and bounds (built once, and only for a bad endpoint)."""
    info = ModbusConfig.model_fields[name]
    typed: Any = Annotated[info.annotation, info]  # a type built at run time
    return TypeAdapter(typed)
