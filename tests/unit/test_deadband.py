"""Report by exception: what is left out, and that nothing that moved is."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.acquire.deadband import ExceptionFilter
from gatewayd.config import PointConfig
from gatewayd.errors import ConfigError, QueueError
from gatewayd.losses import Losses
from gatewayd.model import PointValue, Sample


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


def steady(flt: ExceptionFilter, n: int, start_s: float = 0.0) -> list[dict[str, PointValue]]:
    """`n` readings of a steady point `v` beside a point without a band."""
    return [flt.apply({"v": 5.0, "other": k}, start_s + k) for k in range(n)]


def test_a_loss_further_on_makes_the_next_reading_go_out_in_full() -> None:
    losses = Losses()
    flt = ExceptionFilter([point(deadband=1.0)], losses)
    assert [r.get("v") for r in steady(flt, 3)] == [5.0, None, None]
    losses.lost("rejected", 1)  # the sample carrying 5.0 was dead-lettered
    assert [r.get("v") for r in steady(flt, 3, 10.0)] == [5.0, None, None]
    assert flt.resets == 1
    losses.lost("evicted", 0)  # nothing lost: nothing forgotten
    assert [r.get("v") for r in steady(flt, 2, 20.0)] == [None, None]


def test_a_filter_built_after_a_loss_does_not_reset_for_it() -> None:
    losses = Losses()
    losses.lost("evicted", 40)
    flt = ExceptionFilter([point(deadband=1.0)], losses)
    steady(flt, 3)
    assert flt.resets == 0


def test_a_sink_that_raises_leaves_the_value_unsent() -> None:
    flt = ExceptionFilter([point(deadband=1.0)])
    taken: list[Sample] = []

    def refusing(sample: Sample) -> None:
        raise QueueError("queue is not open")

    with pytest.raises(QueueError):
        flt.hand_on(Sample("pk", "dk", 1, {"v": 5.0, "other": 0}), 0.0, refusing)
    flt.hand_on(Sample("pk", "dk", 2, {"v": 5.2, "other": 1}), 1.0, taken.append)
    flt.hand_on(Sample("pk", "dk", 3, {"v": 5.3}), 2.0, taken.append)  # within the band: nothing
    assert [s.points for s in taken] == [{"v": 5.2, "other": 1}]


def test_one_log_line_per_loss_event_however_many_devices_forget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd.losses")
    losses = Losses()
    filters = [ExceptionFilter([point(deadband=1.0)], losses) for _ in range(3)]
    for flt in filters:
        steady(flt, 2)
    losses.lost("evicted", 64)
    losses.lost("rejected", 1)
    for flt in filters:
        steady(flt, 2, 10.0)
    losses.lost("dropped_in_memory", 5)
    for flt in filters:
        steady(flt, 2, 20.0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("deadband_")]
    assert [line.split(" note=")[0] for line in lines] == [
        "deadband_reset reason=evicted,rejected samples=65",
        "deadband_reset reason=dropped_in_memory samples=5",
    ]
    assert [f.resets for f in filters] == [2, 2, 2]


def test_a_running_total_counts_its_rises_from_the_first_value_seen() -> None:
    losses = Losses()
    losses.total("purged", 500)  # purged before this start: no loss of this run
    assert losses.serial == 0
    losses.total("purged", 500)
    assert losses.serial == 0
    losses.total("purged", 620)
    assert (losses.serial, losses.samples) == (1, {"purged": 120})


def test_a_dead_letter_makes_only_its_own_device_forget() -> None:
    losses = Losses()
    mine = ExceptionFilter([point(deadband=1.0)], losses, ("pk", "mine"))
    other = ExceptionFilter([point(deadband=1.0)], losses, ("pk", "other"))
    for flt in (mine, other):
        steady(flt, 2)
    losses.lost("rejected", 1, {("pk", "other")})
    assert [r.get("v") for r in steady(mine, 2, 10.0)] == [None, None]
    assert [r.get("v") for r in steady(other, 2, 10.0)] == [5.0, None]
    losses.lost("evicted", 64)  # of any device
    for flt in (mine, other):
        assert [r.get("v") for r in steady(flt, 2, 20.0)] == [5.0, None]
    assert (mine.resets, other.resets) == (1, 2)
