"""The sub-devices' sections: each device's identity, its Modbus endpoint and its points.

One model per `[[devices]]` table, `[devices.modbus]` and `[[devices.points]]`, each key with its
bounds. The rules within one endpoint or point (type against table, register count, byte order)
are in config_table_rules.py, those across points and devices (overlaps, repeated ids, shared
lines) in config_rules.py; both also run on what config_salvage.py keeps of a table that did not
validate, so that one mistake never hides another.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gatewayd.config_fields import (
    HubKey,
    Secret,
    SecretFromCredential,
    SecretFromFile,
    Section,
    settle_device_secret,
)
from gatewayd.config_table_rules import (
    REGISTER_WIDTH,
    SERIAL_PAUSE_MS,
    endpoint_rules,
    line_key,
    point_rules,
)

__all__ = [
    "REGISTER_WIDTH",
    "SERIAL_PAUSE_MS",
    "ByteOrder",
    "DataType",
    "DeviceConfig",
    "ModbusConfig",
    "PointConfig",
    "Table",
]

DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Table = Literal["holding", "input", "coil", "discrete"]


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
        found = endpoint_rules(self.__dict__)
        if found:  # the first: Settings tells every one (config_salvage.py)
            raise ValueError(found[0])
        return self

    @property
    def pause_s(self) -> float:
        """The pause between requests on this device's line, in seconds."""
        if self.inter_request_ms is not None:
            return self.inter_request_ms / 1000
        return 0.0 if self.transport == "tcp" else SERIAL_PAUSE_MS / 1000

    def line_key(self) -> tuple[str, ...]:
        """Devices with equal keys share one connection (a serial port, or a host and port)."""
        key = line_key(self.__dict__)
        assert key is not None, "a valid endpoint names its line"
        return key


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
        found = point_rules(self.__dict__, self.model_fields_set)
        if found:  # the first: Settings tells every one (config_salvage.py)
            raise ValueError(found[0])
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
