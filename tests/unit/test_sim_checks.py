"""The hub simulator's pure checks: thing models, request envelopes, control messages, and the
daemon's reading of refusals (gatewayd/sim/thing_model.py, hub_checks.py, enos/refusals.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.config import build_config
from gatewayd.enos.refusals import connack_refusal, login_failure_code, login_refusal
from gatewayd.sim.hub_checks import MAX_REQUEST_BYTES, check_request, parse_control, time_error
from gatewayd.sim.modbus import meter_points
from gatewayd.sim.thing_model import (
    PointType,
    invalid_points,
    load_model,
    model_from_settings,
    parse_model,
    value_error,
)

MODEL = parse_model(
    {
        "pk": {
            "P": "float",
            "N": "int",
            "B": "bool",
            "S": "string",
            "Q": {"type": "double", "quality": True},
            "A": {"type": "array", "items": "int"},
            "T": {"type": "struct", "fields": {"x": "float", "y": {"type": "int"}}},
        }
    }
)["pk"]


@pytest.mark.parametrize(
    ("point", "value"),
    [
        ("P", 1),
        ("P", 2.5),
        ("N", 3),
        ("N", 3.0),
        ("B", True),
        ("S", "on"),
        ("Q", 1.5),
        ("Q", {"value": 1.5, "quality": 9}),
        ("A", [1, 2]),
        ("A", []),
        ("T", {"x": 1.0}),
        ("T", {"x": 1.0, "y": 2}),
    ],
)
def test_values_that_fit(point: str, value: Any) -> None:
    assert value_error(MODEL[point], value) is None


@pytest.mark.parametrize(
    ("point", "value", "why"),
    [
        ("P", None, "null"),
        ("P", "1.0", "not a float"),
        ("P", True, "not a float"),
        ("N", 3.5, "not an int"),
        ("B", 1, "not a bool"),
        ("S", 5, "not a string"),
        ("Q", {"value": None, "quality": 3}, "null"),
        ("Q", {"value": 1.0, "quality": 10}, "quality"),
        ("Q", {"value": 1.0, "quality": True}, "quality"),
        ("P", {"value": 1.0, "quality": 0}, "no quality"),
        ("A", [1, "x"], "item 1"),
        ("A", 1, "not an array"),
        ("T", {"z": 1}, "field 'z'"),
        ("T", {"y": 1.5}, "field 'y'"),
        ("T", [1], "not a struct"),
    ],
)
def test_values_that_do_not_fit(point: str, value: Any, why: str) -> None:
    error = value_error(MODEL[point], value)
    assert error is not None and why in error


def test_invalid_points_names_each_offender() -> None:
    errors = invalid_points(MODEL, {"P": 1.0, "X": 1, "N": "a"})
    assert set(errors) == {"X", "N"} and errors["X"] == "is not in the model"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "product keys"),
        ({"pk": 1}, "table of points"),
        ({"pk": {"P": "decimal"}}, "pk.P: type 'decimal'"),
        ({"pk": {"P": {"type": "struct"}}}, "table of fields"),
        ({"pk": {"P": {"type": "array"}}}, "item type"),
        ({"pk": {"P": {"type": "int", "unit": "W"}}}, "unknown keys"),
        ({"pk": {"P": {"type": "int", "quality": "yes"}}}, "quality"),
        ({"pk": {"P": {"type": "int", "fields": {}}}}, "struct/array"),
    ],
)
def test_model_files_with_mistakes_are_refused_with_the_place(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_model(data)


def test_toml_and_json_model_files(tmp_path: Path) -> None:
    toml = tmp_path / "m.toml"
    toml.write_text('[pk]\nP = "float"\nT = { type = "struct", fields = { x = "int" } }\n')
    as_json = tmp_path / "m.json"
    as_json.write_text(
        json.dumps({"pk": {"P": "float", "T": {"type": "struct", "fields": {"x": "int"}}}})
    )
    assert load_model(toml) == load_model(as_json)
    broken = tmp_path / "b.toml"
    broken.write_text("[pk\n")
    with pytest.raises(ValueError, match=r"b\.toml"):
        load_model(broken)


def test_the_model_a_config_implies() -> None:
    settings = build_config(
        {
            "gateway": {"product_key": "g", "device_key": "g1", "device_secret": "s"},
            "queue": {"path": "/tmp/unused.db"},
            "devices": [
                {
                    "name": "m1",
                    "product_key": "meter",
                    "device_key": "m1",
                    "modbus": {"host": "127.0.0.1", "port": 5020, "unit_id": 1},
                    "points": [*meter_points(), {"id": "Q", "address": 20, "quality": True}],
                }
            ],
        }
    )
    model = model_from_settings(settings)["meter"]
    assert model["Power"] == PointType("float")  # float32
    assert model["Voltage"] == PointType("float")  # uint16 scaled
    assert model["Seq"] == PointType("int")  # uint16 unscaled stays an integer
    assert model["Breaker"] == PointType("bool")
    assert model["Q"] == PointType("int", quality=True)


def body(method: str = "thing.topo.get", **changes: Any) -> bytes:
    request = {"id": "1", "version": "1.1", "method": method, "params": {}, **changes}
    return json.dumps(request).encode()


@pytest.mark.parametrize(
    ("operation", "payload", "code"),
    [
        ("topo/get", body(), None),
        ("topo/get", body(version="1.0"), None),
        ("topo/get", b"", 1251),
        ("topo/get", b"{not json", 1220),
        ("topo/get", body(id=7), 1220),
        ("topo/get", body(version="2"), 1220),
        ("topo/get", body("thing.topo.add"), 1260),
        ("login/batch", body("combine.login"), 1260),
        ("measurepoint/post/batch", body("thing.measurepoint.post"), 1260),
        ("topo/get", body(pad="x" * MAX_REQUEST_BYTES), 1008),
    ],
)
def test_request_envelopes(operation: str, payload: bytes, code: int | None) -> None:
    _, refusal = check_request(operation, payload)
    assert (refusal.code if refusal else None) == code


def test_the_size_limit_is_512_kib_exactly() -> None:
    small = body()
    at_limit = small[:-1] + b',"p":"' + b"x" * (MAX_REQUEST_BYTES - len(small) - 7) + b'"}'
    assert len(at_limit) == MAX_REQUEST_BYTES
    assert check_request("topo/get", at_limit)[1] is not None
    assert check_request("topo/get", at_limit[:-3] + b'"}')[1] is None


@given(st.integers(min_value=10**11, max_value=2**53))
def test_ms_times_pass(ts: int) -> None:
    assert time_error(ts) is None


@given(st.integers(max_value=10**11 - 1) | st.floats(allow_nan=False) | st.text() | st.booleans())
def test_seconds_and_non_integers_do_not(ts: Any) -> None:
    assert time_error(ts) is not None


@pytest.mark.parametrize(
    ("payload", "changes", "kick"),
    [
        (b'{"reply_code": 1212}', {"reply_code": 1212}, None),
        (b'{"drop": true, "delay_s": 2}', {"drop": True, "delay_s": 2.0}, None),
        (b'{"point_codes": {"P": 1206}}', {"point_codes": {"P": 1206}}, None),
        (b'{"kick": ["pk", "dk"]}', {}, ("pk", "dk")),
    ],
)
def test_good_control_messages(payload: bytes, changes: dict[str, Any], kick: Any) -> None:
    assert parse_control(payload) == (changes, kick)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"reply_code": "oops"}', "reply_code"),
        (b'{"reply_code": true}', "reply_code"),
        (b'{"reply_code": 5}', "reply_code"),
        (b'{"drop": "yes"}', "drop"),
        (b'{"delay_s": -1}', "delay_s"),
        (b'{"point_codes": [1]}', "point_codes"),
        (b'{"point_codes": {"P": "x"}}', "point_codes.P"),
        (b'{"kick": "pk/dk"}', "kick"),
        (b'{"dorp": true}', "unknown keys"),
        (b"{}", "expected a JSON object"),
        (b"[1]", "expected a JSON object"),
        (b"nope", "not JSON"),
    ],
)
def test_bad_control_messages_say_what_is_wrong(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_control(payload)


def test_connack_refusals_read_as_the_operator_acts() -> None:
    assert connack_refusal(5) == ("not_authorised", "check gateway.device_secret")
    assert connack_refusal(135) == connack_refusal(5)  # paho's MQTT 5 mapping
    assert connack_refusal(134)[0] == "bad_username_or_password"
    assert connack_refusal(99)[0] == "refused_99"


def test_login_refusals_name_each_device_cause() -> None:
    message = "subPK/m1: 740; subPK/m2: 742; subPK/m10: 705"
    assert login_failure_code(message, ("subPK", "m1")) == 740
    assert login_failure_code(message, ("subPK", "m10")) == 705
    assert login_failure_code(message, ("subPK", "m3")) is None
    assert login_refusal(723, message, ("subPK", "m2")) == (
        "login refused: 742 sign check failed: check its device_secret"
    )
    assert login_refusal(723, "busy", ("subPK", "m3")) == "login refused: 723 busy"
