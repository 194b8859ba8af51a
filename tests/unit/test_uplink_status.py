"""The uplink's status for people, dated by the event that changed it (MqttSession's handlers,
called as paho's thread hands them over; no network)."""

from __future__ import annotations

import pytest

from gatewayd.config import GatewayConfig, MqttConfig
from gatewayd.enos import client
from gatewayd.enos.client import MqttSession


async def test_the_status_is_dated_by_its_change_not_by_a_repeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1_000]
    monkeypatch.setattr(client, "now_ms", lambda: clock[0])
    session = MqttSession(
        MqttConfig(), GatewayConfig(product_key="gwPK", device_key="gw001", device_secret="s"), []
    )
    seen = [(session.status, session.status_since_ms)]
    steps = [
        lambda: session._connect_refused(5, "not authorised"),
        lambda: session._connection_lost("refused"),  # the refused attempt ends: still refused
        lambda: session._connect_refused(5, "not authorised"),  # the streak goes on
        lambda: session._ready([]),
        lambda: session._connection_lost("keepalive"),
        lambda: session._connect_failed("unreachable"),  # a failed attempt while down
    ]
    for step in steps:
        clock[0] += 1_000
        step()
        seen.append((session.status, session.status_since_ms))
    assert seen == [
        ("disconnected", 1_000),
        ("refused: not_authorised", 2_000),
        ("refused: not_authorised", 2_000),
        ("refused: not_authorised", 2_000),
        ("connected", 5_000),
        ("disconnected", 6_000),
        ("disconnected", 6_000),
    ]
