"""The authenticating front on raw sockets: what it does with bytes that are not a good login."""

from __future__ import annotations

import asyncio

from gatewayd.enos.protocol import device_credentials
from gatewayd.sim.hub import HubSimulator
from tests.support.brokers import FrontedBroker
from tests.unit.test_sim_login import encode_connect


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, then read until the front closes the connection (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def login(secret: str) -> bytes:
    creds = device_credentials("gwPK", "gw001", secret, 1700000000000)
    return encode_connect(creds.client_id, creds.username, creds.password.encode())


async def test_a_refused_login_gets_connack_5_and_the_broker_never_sees_it(
    broker: FrontedBroker, hub: HubSimulator
) -> None:
    assert await exchange(broker.port, login("wrong")) == b"\x20\x02\x00\x05"
    assert [(x.code, x.reason) for x in hub.logins] == [
        (5, "sign check failed (wrong device secret?)")
    ]


async def test_an_accepted_login_is_relayed_to_the_broker(
    broker: FrontedBroker, hub: HubSimulator
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    try:
        writer.write(login("gw-secret"))
        async with asyncio.timeout(10):
            assert await reader.readexactly(4) == b"\x20\x02\x00\x00"  # mosquitto's CONNACK
    finally:
        writer.close()


async def test_bytes_that_are_not_a_connect_are_cut_off(
    broker: FrontedBroker, hub: HubSimulator
) -> None:
    assert await exchange(broker.port, b"GET / HTTP/1.1\r\n\r\n") == b""
    assert await exchange(broker.port, b"\x10\xff\xff\xff\x7f") == b""  # a 256 MiB "CONNECT"
    assert hub.logins == []


async def test_with_the_broker_down_the_front_refuses_connections(
    broker: FrontedBroker, hub: HubSimulator
) -> None:
    broker.stop()
    try:
        try:
            got = await exchange(broker.port, login("gw-secret"))
        except ConnectionError:
            got = b""
        assert got == b""
    finally:
        broker.start()
