from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.enos.protocol import (
    METHOD_RESUME_BATCH,
    batch_element,
    batch_request,
    device_credentials,
    measurepoint_topic,
    parse_reply,
    reply_topic,
    sign,
)
from gatewayd.errors import ReplyFormatError
from gatewayd.model import QueuedSample


def test_password_matches_the_protocol_test_vector() -> None:
    # enos-protocol.md §3.3
    creds = device_credentials("654321", "test", "abcdefg", 1548753362502, client_id="123456")
    assert creds.password == "B99032D49C706F7B27B22AB5CD2DD3C56A31E1BCBBC83BA0A2A6BB3272FBB166"
    assert creds.client_id == "123456|securemode=2,signmethod=sha256,timestamp=1548753362502|"
    assert creds.username == "test&654321"


def test_sub_device_sign_matches_the_protocol_example() -> None:
    # enos-protocol.md §4.2, lowercase there; we send uppercase as the docs say.
    fields = {
        "clientId": "subPK.subDK.1700000000000",
        "deviceKey": "subDK",
        "productKey": "subPK",
        "timestamp": "1700000000000",
    }
    assert sign(fields, "subSecret") == (
        "86f95ae13cd6b0df361b19b095049f6636788356a6955f65c4231614f1d636df".upper()
    )


def test_default_client_id_is_the_device_key() -> None:
    creds = device_credentials("pk", "dk", "s", 1)
    assert creds.client_id.startswith("dk|securemode=2,signmethod=sha256,timestamp=1|")


def test_topics() -> None:
    topic = measurepoint_topic("gwPK", "gwDK", METHOD_RESUME_BATCH)
    assert topic == "/sys/gwPK/gwDK/thing/measurepoint/resume/batch"
    assert reply_topic(topic) == "/sys/gwPK/gwDK/thing/measurepoint/resume/batch_reply"


def test_batch_request_is_the_documented_shape() -> None:
    rows = [
        QueuedSample(1, "subPK", 'meter"01', 1700000000000, '{"P":10.0}'),
        QueuedSample(2, "subPK", "meter02", 1700000060000, '{"P":{"value":7.1,"quality":0}}'),
    ]
    body = json.loads(
        batch_request(
            "43",
            METHOD_RESUME_BATCH,
            [batch_element(r) for r in rows],
            allow_offline_sub_device=True,
        )
    )
    assert body == {
        "id": "43",
        "version": "1.1",
        "method": "thing.measurepoint.resume.batch",
        "allowOfflineSubDevice": True,
        "skipInvalidMeasurepoints": False,
        "params": [
            {
                "productKey": "subPK",
                "deviceKey": 'meter"01',
                "measurepoints": {"P": 10.0},
                "time": 1700000000000,
            },
            {
                "productKey": "subPK",
                "deviceKey": "meter02",
                "measurepoints": {"P": {"value": 7.1, "quality": 0}},
                "time": 1700000060000,
            },
        ],
    }


@given(
    keys=st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), min_size=1, max_size=4),
    times=st.lists(st.integers(0, 2**53), min_size=1, max_size=12),
)
def test_batch_elements_parse_back_to_their_samples(
    keys: list[tuple[str, str]], times: list[int]
) -> None:
    """Any keys (quotes, backslashes, any unicode), repeated as a gateway's sub-devices repeat."""
    rows = [QueuedSample(i, *keys[i % len(keys)], ts, f'{{"P":{i}}}') for i, ts in enumerate(times)]
    params = json.loads(batch_request("1", METHOD_RESUME_BATCH, [batch_element(r) for r in rows]))[
        "params"
    ]
    assert params == [
        {
            "productKey": r.product_key,
            "deviceKey": r.device_key,
            "measurepoints": {"P": r.id},
            "time": r.ts_ms,
        }
        for r in rows
    ]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00garbage{",
        b"[]",
        b'"x"',
        b'{"code":200}',
        b'{"id":"1"}',
        b'{"id":"1","code":"200"}',
        b'{"id":"1","code":true}',
        b'{"id":null,"code":200}',
        b'{"id":[1],"code":200}',
        b'{"id":"1","code":200.0}',
    ],
)
def test_unusable_replies_are_refused(payload: bytes) -> None:
    with pytest.raises(ReplyFormatError):
        parse_reply(payload)


def test_reply_data_as_json_text_is_decoded() -> None:
    reply = parse_reply(b'{"id":7,"code":200,"data":"{\\"a\\":1}","message":"ok"}')
    assert (reply.id, reply.code, reply.data, reply.message, reply.ok) == (
        "7",
        200,
        {"a": 1},
        "ok",
        True,
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(st.binary(max_size=300))
def test_random_bytes_never_read_as_success(payload: bytes) -> None:
    try:
        reply = parse_reply(payload)
    except ReplyFormatError:
        return
    body = json.loads(payload)
    assert body["code"] == reply.code and not isinstance(body["code"], bool)


@given(json_values)
def test_random_json_is_a_success_only_with_an_integer_200(body: object) -> None:
    try:
        reply = parse_reply(json.dumps(body).encode())
    except ReplyFormatError:
        return
    assert isinstance(body, dict)
    assert reply.ok == (type(body["code"]) is int and body["code"] == 200)
