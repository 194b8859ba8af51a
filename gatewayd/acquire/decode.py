"""Registers and bits to values: data types, byte and word order, scale and offset. Pure.

Modbus registers are 16-bit big-endian words. Multi-register values are named by the order in
which the bytes A (most significant) … D arrive: ABCD is big-endian, CDAB swaps words, BADC swaps
bytes within each word, DCBA is fully little-endian. The same rule extends to 64-bit values.
"""

from __future__ import annotations

import decimal
import functools
import math
import struct
from collections.abc import Callable, Sequence

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
_F32 = struct.Struct(">f")
_F32_PACK = _F32.pack
Words = Sequence[int] | Sequence[bool]
PointDecoder = Callable[[Words], Scalar]


def _word_packer(count: int, order: ByteOrder) -> tuple[struct.Struct, bool]:
    """How to lay `count` registers out as bytes A..D in `order`: a packer and whether to
    reverse the words first. Reversing the words makes CDAB (and DCBA); packing each word
    little-endian swaps the bytes within it, BADC (and DCBA)."""
    endian = "<" if order in ("BADC", "DCBA") else ">"
    return struct.Struct(f"{endian}{count}H"), order in ("CDAB", "DCBA")


@functools.lru_cache(maxsize=64)
def _raw_decoder(dtype: str, count: int, order: ByteOrder) -> Callable[[Words], int | float]:
    """Registers to the raw number, for one (type, register count, order), built once: the poll
    loop decodes the same few shapes thousands of times a second."""
    packer, reverse = _word_packer(count, order)
    unpacker = struct.Struct(">" + _STRUCT[dtype])
    if unpacker.size != packer.size:
        need = unpacker.size // 2

        def wrong_count(words: Words) -> int | float:
            raise DecodeError(f"{dtype} needs {need} registers, got {len(words)}")

        return wrong_count

    def decode(words: Words) -> int | float:
        try:
            raw = packer.pack(*(reversed(words) if reverse else words))
        except struct.error as exc:  # a short response or a value outside 0..65535
            raise DecodeError(f"{dtype} from registers {list(words)}: {exc}") from exc
        value: int | float = unpacker.unpack(raw)[0]
        return value

    return decode


def _ordered_bytes(registers: Sequence[int], order: ByteOrder) -> bytes:
    packer, reverse = _word_packer(len(registers), order)
    try:
        return packer.pack(*(reversed(registers) if reverse else registers))
    except struct.error as exc:
        raise DecodeError(f"register value out of range in {list(registers)}") from exc


def decode_registers(
    registers: Sequence[int], dtype: DataType, order: ByteOrder = "ABCD"
) -> Scalar:
    """Turn the registers of one point into its raw value (before scale and offset)."""
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
        if not 0 <= registers[0] <= 0xFFFF:
            raise DecodeError(f"register value out of range in {list(registers)}")
        return registers[0] != 0
    return _raw_decoder(dtype, len(registers), order)(registers)


def point_decoder(point: PointConfig) -> PointDecoder:
    """A function that decodes this point's words, with everything that does not change between
    polls worked out once. The poll loop decodes every point of every device each interval;
    deciding type, order and scale anew for each value was most of its cost."""
    if point.table in ("coil", "discrete"):
        return lambda words: bool(words[0])
    if point.bit is not None:
        bit = point.bit
        return lambda words: bool((int(words[0]) >> bit) & 1)
    dtype, order = point.type, point.order
    if dtype in ("string", "bool"):
        return lambda words: decode_registers([int(w) for w in words], dtype, order)
    raw = _raw_decoder(dtype, point.register_count, order)
    scale, offset = point.scale, point.offset
    if dtype == "float32":
        if scale == 1.0 and offset == 0.0:
            return lambda words: shortest_float32(raw(words))
        # Scaled in decimal from the reading's shortest text: rounding the scaled float64 back
        # to float32 lost the reading's own digits (0.12345679 + 100 went out as 100.12346).
        factor, shift = decimal.Decimal(repr(scale)), decimal.Decimal(repr(offset))
        return lambda words: scaled_float32(shortest_float32(raw(words)), factor, shift)
    if scale == 1.0 and offset == 0.0:
        return raw  # integers stay integers when nothing scales them
    if dtype == "float64":
        return lambda words: raw(words) * scale + offset
    places = implied_decimals(scale, offset)
    return lambda words: round(raw(words) * scale + offset, places)


def scaled_float32(reading: float, factor: decimal.Decimal, shift: decimal.Decimal) -> float:
    """A float32 reading (already at its shortest text) times `factor` plus `shift`, worked out
    in decimal so that no digit of the reading is lost or invented."""
    if not math.isfinite(reading):
        return reading
    return float(decimal.Decimal(repr(reading)) * factor + shift)


def shortest_float32(value: float) -> float:
    """The float with the shortest decimal text that is still the same float32.

    A float32 reading held as a Python float prints as its exact float64 expansion
    (23.414709091186523): nine meaningless digits on the wire for every point. The shortest
    text that converts back to the same float32 (23.414709) carries exactly the information
    the device sent, in about two thirds of the bytes."""
    try:
        target = _F32_PACK(value)
    except OverflowError:  # scaled past the float32 range: keep the float64 as it is
        return value
    exact = _F32.unpack(target)[0]
    if not math.isfinite(exact):
        return value
    # Most float32 readings need 7 or 8 significant digits; %g drops trailing zeros, so values
    # that need fewer come out short from the first try as well. Two tries at most, mostly.
    candidate = float("%.7g" % exact)  # noqa: UP031 -- %-formatting is the fastest here
    if _F32_PACK(candidate) == target:
        return candidate
    candidate = float("%.8g" % exact)  # noqa: UP031
    if _F32_PACK(candidate) == target:
        return candidate
    return float("%.9g" % exact)  # noqa: UP031 -- nine significant digits identify any float32


def implied_decimals(scale: float, offset: float) -> int:
    """Decimal places an integer reading scaled so can have: 0.1 -> 1, 0.25 -> 2, 10 -> 0.

    raw * 0.1 in binary floating point gives 229.70000000000002; rounding to the places the
    scale and offset imply gives back the 229.7 the device meant, and nothing is lost: an
    integer times a number with d decimals has at most d decimals."""
    places = 0
    for number in (scale, offset):
        exponent = decimal.Decimal(repr(number)).as_tuple().exponent
        if isinstance(exponent, int):
            places = max(places, -exponent)
    return min(places, 15)


def decode_point(point: PointConfig, words: Words) -> Scalar:
    """Decode one configured point from the registers (or bits) that belong to it."""
    return point_decoder(point)(words)


def is_finite(value: Scalar) -> bool:
    """NaN and infinity must never go on the wire (the hub's JSON has no such numbers)."""
    return not isinstance(value, float) or math.isfinite(value)
