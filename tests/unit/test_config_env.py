"""A value the environment gives is the one used, so a problem in it is named by its variable.

`GATEWAYD_<SECTION>__<KEY>` outranks the file (README, "Configuration"). When both hold a bad
value, `check` named the file's, which the daemon would never have used, and sent the operator
to fix the wrong place.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatewayd.config import load_config
from gatewayd.errors import ConfigError

HEAD = """
[gateway]
product_key = "gp"
device_key = "gd"
device_secret = "gateway-s3cret"
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


@pytest.mark.parametrize("in_file", ['"5020"', "70000", "5020"])
@pytest.mark.parametrize(
    ("in_env", "complaint"),
    [
        ("abc", "Input should be a valid integer, unable to parse string as an integer"),
        ("99999", "Input should be less than or equal to 65535"),
    ],
)
def test_a_bad_value_from_the_environment_is_named_by_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_file: str, in_env: str, complaint: str
) -> None:
    """The file's port is text, out of range or fine; the environment's is what is used."""
    monkeypatch.setenv("GATEWAYD_MQTT__PORT", in_env)
    found = problems(tmp_path, HEAD + f"[mqtt]\nport = {in_file}\n")
    variable = f"GATEWAYD_MQTT__PORT={in_env!r}"
    assert found == [f"mqtt.port: {complaint} (from the environment: {variable})"]


def test_a_file_value_the_environment_replaces_is_not_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's quoted port is never used: the environment's good one is."""
    monkeypatch.setenv("GATEWAYD_MQTT__PORT", "18883")
    path = tmp_path / "c.toml"
    path.write_text(HEAD + '[mqtt]\nport = "5020"\n')
    assert load_config(path).mqtt.port == 18883


def test_every_problem_is_still_named_with_the_environment_s_among_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAYD_FORWARD__INFLIGHT", "0")
    found = problems(tmp_path, HEAD + '[mqtt]\nport = "5020"\n[forward]\ninflight = 0\n')
    assert found == [
        "mqtt.port: must be an integer, not text: write 5020 without quotes",
        "forward.inflight: Input should be greater than or equal to 1 "
        "(from the environment: GATEWAYD_FORWARD__INFLIGHT='0')",
    ]


def test_a_secret_from_the_environment_is_named_but_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAYD_GATEWAY__DEVICE_SECRET", "change-me")
    found = problems(tmp_path, HEAD.replace("gateway-s3cret", "replace-me"))
    assert len(found) == 1, found
    assert found[0].startswith("gateway.device_secret: ") and "placeholder" in found[0], found
    assert found[0].endswith("(from the environment: GATEWAYD_GATEWAY__DEVICE_SECRET)"), found
    assert "change-me" not in found[0]


def test_a_table_given_as_json_is_named_by_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JSON value may hold anything, a secret too: the variable is named, its text is not."""
    monkeypatch.setenv("GATEWAYD_MQTT", '{"keepalive_s": 1}')
    found = problems(tmp_path, HEAD + "[mqtt]\nkeepalive_s = 2\n")
    assert found == [
        "mqtt.keepalive_s: Input should be greater than or equal to 5 "
        "(from the environment: GATEWAYD_MQTT)"
    ]


def test_a_rule_across_keys_names_the_variables_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("gatewayd_mqtt__reconnect_min_s", "120")
    found = problems(tmp_path, HEAD + "[mqtt]\nreconnect_max_s = 60\n")
    assert found == [
        "mqtt: reconnect_min_s must not exceed reconnect_max_s "
        "(from the environment: gatewayd_mqtt__reconnect_min_s='120')"
    ]


def test_a_problem_in_the_file_s_own_value_names_no_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable for another key of the same table does not take the blame."""
    monkeypatch.setenv("GATEWAYD_MQTT__HOST", "hub.example.net")
    found = problems(tmp_path, HEAD + "[mqtt]\nkeepalive_s = 2\n")
    assert found == ["mqtt.keepalive_s: Input should be greater than or equal to 5"]


def test_devices_given_as_json_replace_the_file_s_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An array is replaced, not merged: a key missing from the environment's is its problem."""
    device = {"name": "env-1", "product_key": "sp", "device_key": "sd", "points": [{"id": "P"}]}
    monkeypatch.setenv("GATEWAYD_DEVICES", json.dumps([device]))
    file_device = (
        '[[devices]]\nname = "file-1"\nproduct_key = "sp"\ndevice_key = "sd"\n'
        '[devices.modbus]\nhost = "127.0.0.1"\nport = "5020"\n'
        '[[devices.points]]\nid = "P"\naddress = 0\n'
    )
    found = problems(tmp_path, HEAD + file_device)
    assert found == [
        "devices[0] (env-1).modbus: Field required (from the environment: GATEWAYD_DEVICES)",
        "devices[0] (env-1).points[0] (P).address: Field required "
        "(from the environment: GATEWAYD_DEVICES)",
    ]
