"""Every table × type × order, over Modbus TCP, RTU over TCP and serial RTU (socat pty pair).

Values are drawn by hypothesis, encoded by an encoder independent of ours, served by pymodbus's
server and by modbus-tk's, read by gatewayd's endpoint and decoded by gatewayd's decoder: they must round-trip.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import string
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewayd.acquire.poller import DevicePoller, Endpoint, build_pollers
from gatewayd.config import DeviceConfig
from gatewayd.model import Quality
from tests.support.encoding import FORMATS, encode, encode_text, valid_orders
from tests.support.modbus_lab import WORDS, ModbusLab
from tests.support.tk_lab import TkModbusLab

TRANSPORTS = ["tcp", "rtu_over_tcp", "rtu"]
FLOAT32_MAX = 3.4028234663852886e38
#: pymodbus's server, and modbus-tk's: an independent implementation, so that gatewayd's client
#: (pymodbus) and the server cannot agree on a mistake.
IMPLEMENTATIONS: dict[str, type[ModbusLab]] = {"pymodbus": ModbusLab, "modbus-tk": TkModbusLab}
NUMERIC_CASES = [(t, o) for t in FORMATS for o in valid_orders(t)]
EXAMPLES = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(
    scope="module",
    params=[(impl, t) for impl in IMPLEMENTATIONS for t in TRANSPORTS],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModbusLab]:
    impl, transport = request.param
    instance = IMPLEMENTATIONS[impl](tmp_path_factory.mktemp(f"{impl}-{transport}"))
    instance.start(transport)
    try:
        yield instance
    finally:
        instance.stop()


def device(
    lab: ModbusLab, points: list[dict[str, Any]], unit_id: int = 1, **modbus: Any
) -> DeviceConfig:
    return DeviceConfig(
        name=f"dev{unit_id}",
        product_key="p",
        device_key=f"d{unit_id}",
        interval_s=1.0,
        modbus={**lab.connection, "unit_id": unit_id, "timeout_s": 0.5, "retries": 0, **modbus},
        points=points,
    )


def read(lab: ModbusLab, config: DeviceConfig, endpoint: Endpoint | None = None) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        ep = endpoint or Endpoint(config.modbus)
        try:
            # The decoded points; the serial hold (a timeout after the last request, checked
            # in tests/integration/test_modbus_line_frames.py) would only cost time here.
            return await DevicePoller(config, ep, lambda s: None).read_points()
        finally:
            if endpoint is None:
                ep.close()

    return lab.run(go())


def numbers(dtype: str) -> st.SearchStrategy[Any]:
    if dtype.startswith("float"):
        return st.floats(
            width=32 if dtype == "float32" else 64, allow_nan=False, allow_infinity=False
        )
    bits = int(dtype.removeprefix("u").removeprefix("int"))
    low, high = (
        (0, 2**bits - 1) if dtype.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    return st.integers(low, high)


@pytest.mark.parametrize(("dtype", "order"), NUMERIC_CASES)
@pytest.mark.parametrize("table", ["holding", "input"])
@EXAMPLES
@given(data=st.data())
def test_numbers_round_trip(
    lab: ModbusLab, table: str, dtype: str, order: str, data: st.DataObject
) -> None:
    width = len(encode(0, dtype, order))
    value = data.draw(numbers(dtype))
    address = data.draw(st.integers(0, WORDS - width))
    scale = data.draw(st.sampled_from([1.0, 0.1, -2.5]))
    lab.tables[1][table][address : address + width] = encode(value, dtype, order)
    points = read(
        lab,
        device(
            lab,
            [
                {
                    "id": "v",
                    "table": table,
                    "address": address,
                    "type": dtype,
                    "order": order,
                    "scale": scale,
                }
            ],
        ),
    )
    expected = value * scale if scale != 1.0 else value
    if not math.isfinite(expected):  # scaled past the float range: never sent as inf
        assert "v" not in points
    elif dtype == "float32" and scale == 1.0:  # the same float32, shortest text
        same = struct.pack(">f", points["v"]) == struct.pack(">f", expected)
        assert same or points["v"] == expected == 0  # 0.0 x scale + offset 0.0 drops -0's sign
    elif dtype == "float32":  # the reading's shortest text scaled in decimal (decode.py)
        assert points["v"] == pytest.approx(expected, rel=2**-22, abs=1e-37)
    else:
        assert points["v"] == pytest.approx(expected, rel=1e-12)


@EXAMPLES
@given(data=st.data())
def test_bits_strings_and_register_bits_round_trip(lab: ModbusLab, data: st.DataObject) -> None:
    coils = data.draw(st.lists(st.booleans(), min_size=WORDS, max_size=WORDS))
    discrete = data.draw(st.lists(st.booleans(), min_size=WORDS, max_size=WORDS))
    text = data.draw(st.text(string.ascii_letters + string.digits, min_size=1, max_size=8))
    word = data.draw(st.integers(0, 0xFFFF))
    bit = data.draw(st.integers(0, 15))
    swapped = data.draw(st.booleans())
    tables = lab.tables[1]
    tables["coil"][:] = coils
    tables["discrete"][:] = discrete
    regs = encode_text(text, 4)
    if swapped:
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    tables["holding"][10:14] = regs
    tables["input"][20] = word
    c_addr, d_addr = data.draw(st.integers(0, WORDS - 1)), data.draw(st.integers(0, WORDS - 1))
    points = read(
        lab,
        device(
            lab,
            [
                {"id": "c", "table": "coil", "address": c_addr, "type": "bool"},
                {"id": "d", "table": "discrete", "address": d_addr, "type": "bool"},
                {
                    "id": "s",
                    "table": "holding",
                    "address": 10,
                    "type": "string",
                    "length": 4,
                    "order": "BADC" if swapped else "ABCD",
                },
                {"id": "b", "table": "input", "address": 20, "type": "bool", "bit": bit},
            ],
        ),
    )
    assert points == {
        "c": coils[c_addr],
        "d": discrete[d_addr],
        "s": text,
        "b": bool(word >> bit & 1),
    }


def test_several_devices_on_one_line_take_turns_with_a_pause(lab: ModbusLab) -> None:
    pause_ms = 15
    for unit in (1, 2):
        lab.tables[unit]["holding"][0] = 100 + unit
    configs = [
        device(lab, [{"id": "v", "address": 0}], unit, inter_request_ms=pause_ms) for unit in (1, 2)
    ]
    samples: list[Any] = []

    async def go() -> None:
        pollers, endpoints = build_pollers(configs, samples.append)
        assert len(endpoints) == 1  # one connection for both unit ids
        try:
            for _ in range(5):
                await asyncio.gather(*(p.poll() for p in pollers))
        finally:
            for endpoint in endpoints.values():
                endpoint.close()
            assert all(p.failures == 0 for p in pollers)

    start = len(lab.request_log)
    lab.run(go())
    assert sorted(s.points["v"] for s in samples) == [101] * 5 + [102] * 5
    log = lab.request_log[start:]
    assert len(log) == 10
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(log)]
    assert min(gaps) >= pause_ms / 1000 * 0.9, gaps


def test_exception_responses_give_bad_quality_not_a_lost_sample(lab: ModbusLab) -> None:
    """With `unreadable = "null"` a point that could not be read is sent as null with its
    quality; by default (and for `refused_omitted`) it is left out of the sample."""
    null_q = {"quality": True, "unreadable": "null"}
    lab.tables[1]["holding"][0:2] = encode(float("nan"), "float32", "ABCD")
    lab.tables[1]["holding"][2] = 7
    lab.tables[1]["holding"][3:5] = encode(float("inf"), "float32", "ABCD")
    lab.refuse.add((1, "input"))
    try:
        points = read(
            lab,
            device(
                lab,
                [
                    {"id": "nan_q", "address": 0, "type": "float32", **null_q},
                    {"id": "ok", "address": 2, "type": "uint16", "quality": True},
                    {"id": "inf", "address": 3, "type": "float32"},
                    {"id": "refused_q", "table": "input", "address": 0, **null_q},
                    {"id": "refused", "table": "input", "address": 5},
                    {"id": "refused_omitted", "table": "input", "address": 6, "quality": True},
                ],
            ),
        )
    finally:
        lab.refuse.clear()
    assert points == {
        "nan_q": {"value": None, "quality": Quality.NOT_FINITE},
        "ok": {"value": 7, "quality": Quality.GOOD},
        "refused_q": {"value": None, "quality": Quality.DEVICE_EXCEPTION},
    }
    assert not any(isinstance(v, float) and math.isnan(v) for v in points.values())
