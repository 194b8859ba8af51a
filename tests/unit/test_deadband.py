"""Report by exception: what is left out, and that nothing that moved is."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.acquire.deadband import ExceptionFilter
from gatewayd.config import PointConfig
from gatewayd.errors import ConfigError


def point(**band: float) -> PointConfig:
    return PointConfig(id="v", address=0, type="float32", **band)


def run(flt: ExceptionFilter, values: list[float], step_s: float = 1.0) -> list[float | None]:
    out: list[float | None] = []
    for n, value in enumerate(values):
        kept = flt.apply({"v": value, "other": n}, n * step_s)
        assert kept["other"] == n  # points without a band always go out
        out.append(kept.get("v"))  # type: ignore[arg-type]
    return out


def test_absolute_band_against_the_value_last_sent() -> None:
    flt = ExceptionFilter([point(deadband=0.5)])
    # 10.0 sent; 10.3, 10.5 within 0.5 of it; 10.6 moved; a slow drift adds up and is sent.
    assert run(flt, [10.0, 10.3, 10.5, 10.6, 10.8, 11.0, 11.2]) == [
        10.0,
        None,
        None,
        10.6,
        None,
        None,
        11.2,
    ]
    assert flt.suppressed == 4


def test_percent_band_and_heartbeat() -> None:
    flt = ExceptionFilter([point(deadband_percent=1.0, heartbeat_s=3.0)])
    assert run(flt, [100.0, 100.5, 100.9, 101.0, 101.5, 102.5]) == [
        100.0,
        None,
        None,
        101.0,
        None,
        102.5,
    ]
    steady = ExceptionFilter([point(deadband=1.0, heartbeat_s=3.0)])
    assert run(steady, [5.0] * 8) == [5.0, None, None, 5.0, None, None, 5.0, None]


def test_change_only_for_bits_and_quality_changes() -> None:
    flt = ExceptionFilter([PointConfig(id="b", address=0, type="bool", deadband=0)])
    sent = [flt.apply({"b": v}, n).get("b") for n, v in enumerate([True, True, False, False])]
    assert sent == [True, None, False, None]
    q = ExceptionFilter([point(deadband=5.0, quality=True)])
    assert q.apply({"v": {"value": 1.0, "quality": 0}}, 0) == {"v": {"value": 1.0, "quality": 0}}
    assert q.apply({"v": {"value": 1.1, "quality": 0}}, 1) == {}
    assert q.apply({"v": {"value": 1.1, "quality": 1}}, 2) == {"v": {"value": 1.1, "quality": 1}}


def test_a_band_on_a_string_is_refused_and_heartbeat_needs_a_band() -> None:
    with pytest.raises((ConfigError, ValueError)):
        PointConfig(id="s", address=0, type="string", length=2, deadband=1.0)
    with pytest.raises((ConfigError, ValueError)):
        PointConfig(id="v", address=0, heartbeat_s=10)


@given(
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60),
    band=st.floats(0, 100),
)
def test_every_reading_left_out_is_within_the_band_of_the_value_last_sent(
    values: list[float], band: float
) -> None:
    flt = ExceptionFilter([point(deadband=band)])
    last_sent: float | None = None
    sent = 0
    for n, value in enumerate(values):
        kept = flt.apply({"v": value}, float(n))
        if "v" in kept:
            assert last_sent is None or abs(value - last_sent) > band
            last_sent = value
            sent += 1
        else:
            assert last_sent is not None and abs(value - last_sent) <= band
    assert sent + flt.suppressed == len(values)
