from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gatewayd.backoff import backoff_delay


@given(st.integers(1, 200), st.floats(0, 0.999999))
def test_delay_is_jittered_below_a_capped_exponential_ceiling(failures: int, draw: float) -> None:
    delay = backoff_delay(failures, 1.0, 60.0, lambda: draw)
    assert 0.0 <= delay <= min(60.0, 2.0 ** (failures - 1))


def test_the_ceiling_doubles_then_caps() -> None:
    ceilings = [backoff_delay(n, 0.5, 4.0, lambda: 1.0) for n in range(1, 7)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
