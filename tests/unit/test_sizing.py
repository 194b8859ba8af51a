"""The largest request a device's sample can make: an upper bound that `check` relies on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.config import PointConfig, build_config
from gatewayd.enos.protocol import batch_element, batch_request
from gatewayd.errors import ConfigError
from gatewayd.forward.sizing import largest_request_bytes
from gatewayd.model import QueuedSample
from tests.support.daemon import config_data, modbus_device

WORST_VALUES: dict[str, list[Any]] = {
    "bool": [False, True],
    "int16": [-32768],
    "uint64": [2**64 - 1],
    "int64": [-(2**63)],
    "float64": [-2.2250738585072014e-308, -1.7976931348623157e308, 0.1 + 0.2],
}


def request_for(points: list[PointConfig], values: dict[str, Any]) -> bytes:
    row = QueuedSample(1, "pk", "dk", 9_999_999_999_999, json.dumps(values, separators=(",", ":")))
    return batch_request("9" * 20, "thing.measurepoint.resume.batch", [batch_element(row)])


@given(
    ids=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=20, unique=True),
    kind=st.sampled_from(sorted(WORST_VALUES)),
    quality=st.booleans(),
)
def test_the_bound_holds_for_numbers_and_booleans(ids: list[str], kind: str, quality: bool) -> None:
    points = [
        PointConfig(id=i, address=n * 4, type=kind, quality=quality) for n, i in enumerate(ids)
    ]
    for value in WORST_VALUES[kind]:
        wire = {"value": value, "quality": 9} if quality else value
        actual = len(request_for(points, {i: wire for i in ids}))
        assert actual <= largest_request_bytes("pk", "dk", points)


@given(text=st.text(min_size=0, max_size=8))
def test_the_bound_holds_for_strings(text: str) -> None:
    """Any string that fits 4 registers (8 UTF-8 bytes), control characters included."""
    encoded = text.encode("utf-8")[:8].decode("utf-8", errors="ignore")
    points = [PointConfig(id="S", address=0, type="string", length=4)]
    actual = len(request_for(points, {"S": encoded}))
    assert actual <= largest_request_bytes("pk", "dk", points)


def test_check_refuses_a_device_whose_sample_cannot_fit_a_request() -> None:
    """The issue's config: 256 points with 2,100-character ids (~540 KB a sample)."""
    points = [{"id": f"{n:04d}" + "x" * 2096, "address": n} for n in range(256)]
    data = config_data(Path("/tmp/unused"), 1883, [modbus_device("wide", 502, 1, points, 1.0)])
    with pytest.raises(ConfigError) as refused:
        build_config(data)
    assert any("batch_max_bytes" in p and "wide" in p for p in refused.value.problems)


def test_check_accepts_the_same_device_with_short_ids() -> None:
    points = [{"id": f"P{n}", "address": n} for n in range(256)]
    data = config_data(Path("/tmp/unused"), 1883, [modbus_device("wide", 502, 1, points, 1.0)])
    assert build_config(data).devices[0].name == "wide"
