"""The rules within one `[devices.modbus]` table or one `[[devices.points]]` table.

Plain functions of the table's valid values (a key missing from the mapping: its value was not
valid, so no rule that needs it is judged), because they serve twice: the models in
config_devices.py raise the first they find, and a table that did not validate still has every
rule whose keys are fine checked (config_salvage.py). pydantic stops at a field error before a
model's own rules, so without this an unknown key would hide `local_echo` on a TCP endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Set
from typing import Any

#: One table's values by key: those that are valid (or defaults, where a key is not given).
Values = Mapping[str, Any]

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

_REGISTER_TABLES = ("holding", "input")
#: What devices on one serial line must agree on, in the order they are told.
_SERIAL_SETTINGS = ("baudrate", "parity", "stopbits", "bytesize", "inter_request_ms", "local_echo")


def endpoint_rules(v: Values) -> list[str]:
    """What is wrong across the keys of one endpoint; each rule needs its keys valid."""
    found: list[str] = []
    transport = v.get("transport")
    if transport is None:  # every rule here depends on the transport
        return found
    if transport in ("tcp", "rtu_over_tcp") and "host" in v and not v["host"]:
        found.append(f"host is required with transport = {transport!r}")
    if transport == "rtu" and "serial_port" in v and not v["serial_port"]:
        found.append("serial_port is required with transport = 'rtu'")
    if v.get("unit_id") == 0 and transport != "tcp":
        found.append("unit_id 0 is the broadcast address on a serial line: no slave answers it")
    if v.get("local_echo") is True and transport != "rtu":
        found.append("local_echo is a serial adapter's: it needs transport = 'rtu'")
    return found


def register_count(v: Values) -> int | None:
    """How many registers (or bits) a point occupies; None where its type or length is bad."""
    kind = v.get("type")
    if kind == "string":
        length = v.get("length")
        return length if isinstance(length, int) else None
    return REGISTER_WIDTH.get(kind) if isinstance(kind, str) else None


def point_rules(v: Values, given: Set[str]) -> list[str]:
    """What is wrong across the keys of one point (`given`: the keys the table sets)."""
    found: list[str] = []
    kind, table, bit = v.get("type"), v.get("table"), v.get("bit")
    # a deadband that is not valid (missing here) may be meant: not judged unbanded
    unbanded = v.get("deadband", 0) is None and v.get("deadband_percent", 0) is None
    if v.get("heartbeat_s") is not None and unbanded:
        found.append("heartbeat_s is only for points with deadband or deadband_percent")
    if kind in ("bool", "string") and (v.get("deadband") or v.get("deadband_percent") is not None):
        found.append(f"a {kind} point has no size of change: use deadband = 0 (send on change)")
    if v.get("unreadable") == "null" and v.get("quality") is False:
        found.append("unreadable = 'null' needs quality = true (the null carries a quality)")
    if table in ("coil", "discrete") and kind is not None and kind != "bool":
        found.append(f"table {table!r} holds bits: type must be 'bool'")
    if kind == "string" and "length" in v and v["length"] < 1:
        found.append("type 'string' needs length (registers) of at least 1")
    if kind is not None and kind != "string" and v.get("length"):
        found.append("length is only for type 'string'")
    in_a_register = kind == "bool" and table in _REGISTER_TABLES
    if bit is not None and kind is not None and table is not None and not in_a_register:
        found.append("bit is only for type 'bool' in a register table")
    if bit is not None and "order" in given and "order" in v:
        found.append("order is meaningless on a bit of a register: remove it")
    count = register_count(v)
    order = v.get("order")
    if table in _REGISTER_TABLES and order in ("CDAB", "DCBA"):
        if kind == "string":
            found.append(
                f"order {order!r} swaps words, but a string is read register by register: "
                "use 'ABCD' or 'BADC'"
            )
        elif count == 1:
            found.append(
                f"order {order!r} swaps words, but {'an' if str(kind).startswith('i') else 'a'} {kind}"
                " is one register: use 'ABCD' or 'BADC'"
            )
    address = v.get("address")
    if table is not None and count is not None and address is not None:
        last = address + count - 1
        if last > 65535:
            what = "registers" if table in _REGISTER_TABLES else "bits"
            found.append(f"{what} {address}-{last} run past 65535, the last address")
    return found


def line_key(v: Values) -> tuple[str, ...] | None:
    """Devices with equal keys share one connection (a serial port, or a host and port);
    None where the endpoint's keys do not say which."""
    transport = v.get("transport")
    if transport == "rtu":  # one port under two names (a udev symlink) is one line
        port = v.get("serial_port")
        return ("rtu", os.path.realpath(port)) if port else None
    if transport is None or not v.get("host") or "port" not in v:
        return None
    return (transport, str(v["host"]), str(v["port"]))


def line_settings(v: Values) -> dict[str, tuple[object, str]]:
    """What devices sharing one connection must agree on: by key, the value in force (for
    comparing) and as the operator reads it. A key that is not valid is left out."""
    names = _SERIAL_SETTINGS if v.get("transport") == "rtu" else ("inter_request_ms",)
    out: dict[str, tuple[object, str]] = {}
    for name in names:
        if name not in v:
            continue
        value = v[name]
        if name == "inter_request_ms" and value is None:
            value = 0 if v.get("transport") == "tcp" else SERIAL_PAUSE_MS
            out[name] = (value, f"{value} (the default)")
        elif isinstance(value, bool):
            out[name] = (value, str(value).lower())  # as TOML writes it
        else:
            out[name] = (value, repr(value) if isinstance(value, str) else str(value))
    return out
