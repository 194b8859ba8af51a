"""Topology's parking rules and request splitting, with a stand-in session (no socket)."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from gatewayd.config import ForwardConfig, GatewayConfig
from gatewayd.enos.topo_requests import split_by_size
from gatewayd.enos.topology import Topology


class IdleSession:
    command_handler: Any = None


def topology(clock: list[float]) -> Topology:
    gateway = GatewayConfig(product_key="gw", device_key="gw1", device_secret="s")
    forward = ForwardConfig(retry_min_s=1, retry_max_s=100)
    return Topology(cast(Any, IdleSession()), gateway, [], forward, clock=lambda: clock[0])


async def test_a_device_refused_again_and_again_waits_longer_each_time() -> None:
    clock = [0.0]
    topo = topology(clock)
    key = ("pk", "lost")  # no secret: not managed, unparked by time alone
    delays = []
    for _ in range(4):
        topo.park(key, "1212")
        delays.append(topo.parked[key] - clock[0])
        clock[0] = topo.parked[key]
        await topo.retry_parked()  # due: unparked for another try
        assert key not in topo.parked
    assert delays == [5.0, 10.0, 20.0, 40.0]
    topo.park(key, "1212")
    topo.confirmed({key})  # the hub took a sample of it at last ...
    clock[0] = topo.parked[key]
    await topo.retry_parked()
    topo.park(key, "1212")  # ... so its next park starts short again
    assert topo.parked[key] - clock[0] == 5.0


def test_refusals_of_requests_already_in_flight_do_not_park_it_again() -> None:
    clock = [0.0]
    topo = topology(clock)
    for _ in range(4):
        topo.park(("pk", "lost"), "1212")
    assert topo.park_counts == {("pk", "lost"): 1} and topo.parked[("pk", "lost")] == 5.0


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=500), max_size=200),
    budget=st.integers(min_value=1, max_value=2000),
)
def test_split_by_size_keeps_order_and_the_budget(sizes: list[int], budget: int) -> None:
    items = list(range(len(sizes)))
    groups = split_by_size(items, sizes, budget)
    assert [i for group in groups for i in group] == items
    for group in groups:
        assert len(group) == 1 or sum(sizes[i] for i in group) <= budget
