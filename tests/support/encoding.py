"""An encoder written independently of gatewayd's decoder, to check it against."""

from __future__ import annotations

import struct

FORMATS = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "int64": "q",
    "uint64": "Q",
    "float64": "d",
}
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def encode(value: float | int, dtype: str, order: str) -> list[int]:
    """Big-endian bytes, then CDAB reverses the words and BADC swaps the bytes in each word."""
    raw = struct.pack(">" + FORMATS[dtype], value)
    pairs = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA"):
        pairs = pairs[::-1]
    if order in ("BADC", "DCBA"):
        pairs = [p[::-1] for p in pairs]
    return [int.from_bytes(p, "big") for p in pairs]


def encode_text(text: str, registers: int) -> list[int]:
    raw = text.encode("ascii").ljust(registers * 2, b"\x00")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def valid_orders(dtype: str) -> tuple[str, ...]:
    return ("ABCD", "BADC") if dtype.endswith("16") else ORDERS
