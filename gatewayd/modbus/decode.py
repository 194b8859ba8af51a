"""Registers and bits to values: data types, byte and word order, scale and offset. Pure.

Modbus registers are 16-bit big-endian words. Multi-register values are named by the order in
which the bytes A (most significant) … D arrive: ABCD is big-endian, CDAB swaps words, BADC swaps
bytes within each word, DCBA is fully little-endian. The same rule extends to 64-bit values.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from gatewayd.config import ByteOrder, DataType, PointConfig
from gatewayd.errors import DecodeError

_STRUCT: dict[str, str] = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "int64": "q",
    "uint64": "Q",
    "float64": "d",
}

Scalar = bool | int | float | str


def _ordered_bytes(registers: Sequence[int], order: ByteOrder) -> bytes:
    words = list(registers)
    if order in ("CDAB", "DCBA"):
        words.reverse()
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    if order in ("BADC", "DCBA"):
        raw = bytes(b for i in range(0, len(raw), 2) for b in (raw[i + 1], raw[i]))
    return raw


def decode_registers(
    registers: Sequence[int], dtype: DataType, order: ByteOrder = "ABCD"
) -> Scalar:
    """Turn the registers of one point into its raw value (before scale and offset)."""
    if any(not 0 <= r <= 0xFFFF for r in registers):
        raise DecodeError(f"register value out of range in {list(registers)}")
    if dtype == "string":
        # Strings are read in register order; only the byte order within a register can differ.
        text_order: ByteOrder = "BADC" if order in ("BADC", "DCBA") else "ABCD"
        raw = _ordered_bytes(registers, text_order)
        try:
            return raw.decode("utf-8").rstrip("\x00 ")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"string is not UTF-8: {raw!r}") from exc
    if dtype == "bool":
        if len(registers) != 1:
            raise DecodeError(f"bool needs 1 register, got {len(registers)}")
        return registers[0] != 0
    fmt = _STRUCT[dtype]
    need = struct.calcsize(fmt) // 2
    if len(registers) != need:
        raise DecodeError(f"{dtype} needs {need} registers, got {len(registers)}")
    value: int | float = struct.unpack(">" + fmt, _ordered_bytes(registers, order))[0]
    return value


def scale_value(raw: int | float, scale: float, offset: float) -> int | float:
    """Apply `raw * scale + offset`, keeping integers integral when nothing changes them."""
    if scale == 1.0 and offset == 0.0:
        return raw
    return raw * scale + offset


def decode_point(point: PointConfig, words: Sequence[int] | Sequence[bool]) -> Scalar:
    """Decode one configured point from the registers (or bits) that belong to it."""
    if point.table in ("coil", "discrete"):
        return bool(words[0])
    if point.bit is not None:
        return bool((int(words[0]) >> point.bit) & 1)
    raw = decode_registers([int(w) for w in words], point.type, point.order)
    if isinstance(raw, str | bool):
        return raw
    return scale_value(raw, point.scale, point.offset)


def is_finite(value: Scalar) -> bool:
    """NaN and infinity must never go on the wire (the hub's JSON has no such numbers)."""
    return not isinstance(value, float) or math.isfinite(value)
