"""The hub simulator refuses what the real hub refuses, with the real codes (issue 16).

A bare gateway (tests/support/raw_gateway.py) sends requests the daemon never would, over the
real broker and through the simulator's authenticating front.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.enos.protocol import SubDevice, login_batch_params, topo_add_params
from gatewayd.sim.hub import CONTROL_TOPIC, HubSimulator
from gatewayd.sim.thing_model import parse_model
from tests.support.brokers import FrontedBroker as Broker
from tests.support.raw_gateway import GATEWAY, RawGateway, envelope

PK, DK, SECRET = GATEWAY
DATA = f"/sys/{PK}/{DK}/thing/measurepoint/post/batch"
RESUME = f"/sys/{PK}/{DK}/thing/measurepoint/resume/batch"
TOPO_GET = f"/sys/{PK}/{DK}/thing/topo/get"
TOPO_ADD = f"/sys/{PK}/{DK}/thing/topo/add"
LOGIN = f"/ext/session/{PK}/{DK}/combine/login/batch"
METER = SubDevice("subPK", "m1", "secret-of-m1")
NOW_MS = int(time.time() * 1000)
MODEL = {
    "subPK": {
        "P": "float",
        "Seq": "int",
        "Q": {"type": "float", "quality": True},
        "Phase": {"type": "struct", "fields": {"a": "float", "b": "int"}},
    }
}


@pytest.fixture
def gateway(broker: Broker, hub: HubSimulator) -> Iterator[RawGateway]:
    client = RawGateway(broker.port, PK, DK, SECRET)
    assert client.connect() == 0
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def online(gateway: RawGateway, hub: HubSimulator) -> RawGateway:
    """The gateway with sub-device m1 in its topology and logged in."""
    hub.register(*METER.key, METER.secret)
    added = gateway.ask(TOPO_ADD, envelope("1", "thing.topo.add", topo_add_params([METER], NOW_MS)))
    assert added["code"] == 200
    params = login_batch_params([METER], NOW_MS)
    assert gateway.ask(LOGIN, envelope("2", "combine.login.batch", params))["code"] == 200
    return gateway


def batch(points: dict[str, Any], ts_ms: int = NOW_MS, **flags: Any) -> dict[str, Any]:
    element = {"productKey": "subPK", "deviceKey": "m1", "measurepoints": points, "time": ts_ms}
    return envelope("9", "thing.measurepoint.post.batch", [element], **flags)


# --- the gateway's own login ---------------------------------------------------------------


def test_a_wrong_gateway_secret_is_refused_not_authorised(
    broker: Broker, hub: HubSimulator
) -> None:
    wrong = RawGateway(broker.port, PK, DK, "change-me")
    try:
        assert wrong.connect() == 5  # MQTT 3.1.1 CONNACK "not authorised"
    finally:
        wrong.close()
    right = RawGateway(broker.port, PK, DK, SECRET)
    try:
        assert right.connect() == 0
    finally:
        right.close()


def test_an_unknown_gateway_is_refused(broker: Broker, hub: HubSimulator) -> None:
    stranger = RawGateway(broker.port, "otherPK", "gw999", SECRET)
    try:
        assert stranger.connect() == 5
    finally:
        stranger.close()


# --- envelope checks on every topic ------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "method"),
    [
        (TOPO_GET, "thing.topo.add"),
        (TOPO_ADD, "thing.topo.get"),
        (LOGIN, "combine.login"),
        (DATA, "thing.measurepoint.resume.batch"),
        (RESUME, "thing.measurepoint.post.batch"),
    ],
)
def test_a_wrong_method_gets_1260_on_every_topic(
    gateway: RawGateway, topic: str, method: str
) -> None:
    reply = gateway.ask(topic, envelope("7", method, {}))
    assert reply["code"] == 1260


def test_an_unknown_version_is_refused(gateway: RawGateway) -> None:
    body = envelope("7", "thing.topo.get", {})
    body["version"] = "2.0"
    assert gateway.ask(TOPO_GET, body)["code"] == 1220


def test_a_request_of_512_kib_gets_1008(online: RawGateway) -> None:
    big = batch({"P": 1.0, "pad": "x" * (512 * 1024)})
    reply = online.ask(DATA, big)
    assert reply["code"] == 1008


def test_a_seconds_range_time_is_refused(online: RawGateway, hub: HubSimulator) -> None:
    reply = online.ask(DATA, batch({"P": 1.0}, ts_ms=NOW_MS // 1000))
    assert reply["code"] == 1206 and "seconds" in reply["message"]
    assert hub.delivered_count() == 0


def test_sign_method_is_read_not_assumed(gateway: RawGateway, hub: HubSimulator) -> None:
    hub.register(*METER.key, METER.secret)
    entries = topo_add_params([METER], NOW_MS)  # sha256 signs
    entries[0]["signMethod"] = "md5"
    assert gateway.ask(TOPO_ADD, envelope("3", "thing.topo.add", entries))["code"] == 1255
    del entries[0]["signMethod"]
    assert gateway.ask(TOPO_ADD, envelope("4", "thing.topo.add", entries))["code"] == 1255
    entries[0]["signMethod"] = "sha256"
    assert gateway.ask(TOPO_ADD, envelope("5", "thing.topo.add", entries))["code"] == 200
    params = login_batch_params([METER], NOW_MS)
    params["signMethod"] = "md5"
    reply = gateway.ask(LOGIN, envelope("6", "combine.login.batch", params))
    assert reply["code"] == 723 and "742" in reply["message"]


def test_a_seconds_range_login_timestamp_is_refused(gateway: RawGateway, hub: HubSimulator) -> None:
    hub.register(*METER.key, METER.secret)
    gateway.ask(TOPO_ADD, envelope("1", "thing.topo.add", topo_add_params([METER], NOW_MS)))
    params = login_batch_params([METER], NOW_MS // 1000)
    reply = gateway.ask(LOGIN, envelope("2", "combine.login.batch", params))
    assert reply["code"] != 200 and "timestamp" in reply["message"]


# --- the thing model ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "offender"),
    [
        ({"P": 1.0, "Nope": 2.0}, "Nope"),  # not in the model
        ({"P": "high"}, "P"),  # a string for a float
        ({"Seq": 1.5}, "Seq"),  # a float for an int
        ({"Q": {"value": None, "quality": 3}}, "Q"),  # an unreadable point sent as null
        ({"P": {"value": 1.0, "quality": 0}}, "P"),  # quality on a point without it
        ({"Phase": {"a": 1.0, "c": 2}}, "Phase"),  # a struct field the model lacks
    ],
)
def test_a_point_outside_the_model_gets_1204_naming_it(
    online: RawGateway, hub: HubSimulator, points: dict[str, Any], offender: str
) -> None:
    hub.set_models(parse_model(MODEL))
    reply = online.ask(DATA, batch(points))
    assert reply["code"] == 1204 and offender in reply["message"]
    assert hub.delivered_count() == 0


def test_skip_invalid_measurepoints_keeps_the_good_points(
    online: RawGateway, hub: HubSimulator
) -> None:
    hub.set_models(parse_model(MODEL))
    points = {"P": 1.5, "Seq": 7, "Q": {"value": None, "quality": 3}, "Nope": 1}
    reply = online.ask(DATA, batch(points, skipInvalidMeasurepoints=True))
    assert reply["code"] == 200
    assert [d.points for d in hub.deliveries] == [{"P": 1.5, "Seq": 7}]


def test_values_that_fit_the_model_are_stored(online: RawGateway, hub: HubSimulator) -> None:
    hub.set_models(parse_model(MODEL))
    points = {"P": 3, "Seq": 7, "Q": {"value": 2.5, "quality": 0}, "Phase": {"a": 1.0, "b": 2}}
    assert online.ask(DATA, batch(points))["code"] == 200
    assert [d.points for d in hub.deliveries] == [points]


# --- control messages -------------------------------------------------------------------


async def test_a_bad_control_message_is_refused_loudly(broker: Broker, hub: HubSimulator) -> None:
    answers: list[dict[str, Any]] = []
    got = asyncio.Event()
    loop = asyncio.get_running_loop()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)

    def on_message(c: Any, u: Any, message: mqtt.MQTTMessage) -> None:
        answers.append(json.loads(message.payload))
        loop.call_soon_threadsafe(got.set)

    client.on_message = on_message
    client.connect("127.0.0.1", broker.backend_port)
    client.subscribe(CONTROL_TOPIC + "/reply", qos=1)
    client.loop_start()
    try:
        for bad in (b'{"reply_code": "oops"}', b"not json", b'{"dorp": true}'):
            got.clear()
            client.publish(CONTROL_TOPIC, bad, qos=1)
            async with asyncio.timeout(10):
                await got.wait()
            assert answers[-1]["ok"] is False and answers[-1]["error"]
        assert hub.faults.reply_code == 200 and not hub.faults.drop
        got.clear()
        client.publish(CONTROL_TOPIC, b'{"reply_code": 500}', qos=1)
        async with asyncio.timeout(10):
            await got.wait()
        assert answers[-1]["ok"] is True and hub.faults.reply_code == 500
    finally:
        client.disconnect()
        client.loop_stop()
