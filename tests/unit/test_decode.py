from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.acquire.decode import decode_point, decode_registers, is_finite, point_decoder
from gatewayd.config import PointConfig
from gatewayd.errors import DecodeError
from tests.support.encoding import FORMATS, encode


def values_for(dtype: str) -> st.SearchStrategy[float | int]:
    if dtype.startswith("float"):
        width = 32 if dtype == "float32" else 64
        return st.floats(width=width, allow_nan=False, allow_infinity=False)
    bits = {"16": 16, "32": 32, "64": 64}[dtype.removeprefix("u").removeprefix("int")]
    if dtype.startswith("u"):
        return st.integers(0, 2**bits - 1)
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


CASES = [
    (t, o)
    for t in FORMATS
    for o in ("ABCD", "CDAB", "BADC", "DCBA")
    if not (t.endswith("16") and o in ("CDAB", "DCBA"))
]


@pytest.mark.parametrize(("dtype", "order"), CASES)
@given(data=st.data())
def test_every_type_and_order_round_trips(dtype: str, order: str, data: st.DataObject) -> None:
    value = data.draw(values_for(dtype))
    decoded = decode_registers(encode(value, dtype, order), dtype, order)  # type: ignore[arg-type]
    assert decoded == value


def test_known_layouts() -> None:
    # 0x41480000 is 12.5 as float32; CDAB sends the low word first.
    assert decode_registers([0x4148, 0x0000], "float32", "ABCD") == 12.5
    assert decode_registers([0x0000, 0x4148], "float32", "CDAB") == 12.5
    assert decode_registers([0x4841, 0x0000], "float32", "BADC") == 12.5
    assert decode_registers([0x0000, 0x4841], "float32", "DCBA") == 12.5
    assert decode_registers([0xFFFB], "int16") == -5
    assert decode_registers([0x0001, 0x1170], "uint32") == 70000


def test_strings_strip_padding_and_swap_bytes() -> None:
    assert decode_registers([0x4142, 0x4300], "string") == "ABC"
    assert decode_registers([0x4241, 0x0043], "string", "BADC") == "ABC"


def test_wrong_register_count_is_an_error_not_a_value() -> None:
    with pytest.raises(DecodeError):
        decode_registers([1], "float32")


def scaled(dtype: str, order: str = "ABCD", scale: float = 1.0, offset: float = 0.0) -> PointConfig:
    return PointConfig(
        id="p", table="holding", address=0, type=dtype, order=order, scale=scale, offset=offset
    )


def test_scale_and_offset() -> None:
    assert decode_point(scaled("uint16", scale=0.1), [2301]) == pytest.approx(230.1)
    assert decode_point(scaled("int16", scale=0.5, offset=1.0), [0xFFFB]) == -1.5
    plain = decode_point(scaled("uint16"), [7])
    assert plain == 7 and isinstance(plain, int)


@pytest.mark.parametrize(("dtype", "order"), CASES)
@given(data=st.data())
def test_the_compiled_decoder_round_trips_with_scale_and_offset(
    dtype: str, order: str, data: st.DataObject
) -> None:
    """The poll loop's per-point decoder, checked against the independent encoder."""
    value = data.draw(values_for(dtype))
    scale = data.draw(st.sampled_from([1.0, 0.1, -2.0]))
    offset = data.draw(st.sampled_from([0.0, 3.5]))
    expected = value if (scale, offset) == (1.0, 0.0) else value * scale + offset
    got = point_decoder(scaled(dtype, order, scale, offset))(encode(value, dtype, order))
    assert type(got) is type(expected)
    if dtype == "float32" and (scale, offset) == (1.0, 0.0):
        # The same float32 the device meant, in the shortest text that says so.
        if math.isfinite(expected) and abs(expected) < 3.4e38:
            assert struct.pack(">f", got) == struct.pack(">f", expected)
            assert len(repr(got)) <= len(repr(expected))
    elif dtype == "float32":
        # The reading's shortest text scaled in decimal: within the float32's own precision.
        if math.isfinite(expected):
            assert got == pytest.approx(expected, rel=2**-22, abs=1e-30)
    elif isinstance(expected, float) and dtype != "float64":
        # An integer scaled by 0.1 (or offset by 3.5) has one decimal: 229.7, not 229.70000000000002.
        assert got == pytest.approx(expected, rel=1e-15, abs=0.05 + 1e-9)
        if abs(got) < 2**40:
            assert len(repr(got).partition(".")[2]) <= 1
    else:
        assert got == expected


def test_scaled_integers_and_float32_go_out_as_short_text() -> None:
    assert decode_point(scaled("uint16", scale=0.1), [2297]) == 229.7
    reading = decode_point(scaled("float32"), encode(23.414709091186523, "float32", "ABCD"))
    assert repr(reading) == "23.41471"  # 7 significant digits identify this float32
    assert struct.pack(">f", reading) == struct.pack(">f", 23.414709091186523)
    assert decode_point(scaled("int32", scale=0.25), encode(-3, "int32", "ABCD")) == -0.75


def test_the_compiled_decoder_refuses_wrong_counts_and_out_of_range_words() -> None:
    decode = point_decoder(scaled("float32"))
    for words in ([1], [1, 2, 3], [0x10000, 0], [-1, 0]):
        with pytest.raises(DecodeError):
            decode(words)


def test_bits_and_register_bits() -> None:
    coil = PointConfig(id="c", table="coil", address=0, type="bool")
    assert decode_point(coil, [True]) is True
    flag = PointConfig(id="f", table="holding", address=0, type="bool", bit=3)
    assert decode_point(flag, [0b1000]) is True
    assert decode_point(flag, [0b0111]) is False


def test_non_finite_values_are_flagged() -> None:
    assert not is_finite(math.nan) and not is_finite(math.inf) and is_finite(1.5) and is_finite("x")


def test_a_scaled_float32_keeps_the_readings_digits() -> None:
    """Found by an adversary: the scaled value was rounded back to float32, so 0.12345679 with
    offset 100 went out as 100.12346, two of the reading's digits gone."""
    words = encode(0.12345679, "float32", "ABCD")
    assert point_decoder(scaled("float32", offset=100.0))(words) == 100.12345679
    assert point_decoder(scaled("float32", scale=1000.0))(encode(123456.7, "float32", "ABCD")) == (
        123456700.0
    )
    assert point_decoder(scaled("float32", scale=0.1))(encode(2297.0, "float32", "ABCD")) == 229.7
