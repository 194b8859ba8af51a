"""A value the environment gives is the one used, so a problem in it is named by its variable.

`GATEWAYD_<SECTION>__<KEY>` outranks the file (README, "Configuration"). When both hold a bad
value, `check` named the file's, which the daemon would never have used, and sent the operator
to fix the wrong place.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gatewayd.config import Settings, load_config
from gatewayd.config_env import overruled
from gatewayd.config_variables import NOT_CONFIGURATION
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
        ('{"port": 1}', "Input should be a valid integer, unable to parse string as an integer"),
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


@pytest.mark.parametrize(
    ("variable", "text", "problem"),
    [
        ("GATEWAYD_MQTT", "not json", "mqtt: not a JSON object of the table's keys"),
        ("GATEWAYD_MQTT", "", "mqtt: not a JSON object of the table's keys"),
        ("GATEWAYD_MQTT", '{"port": 1883', "mqtt: not a JSON object of the table's keys"),
        ("GATEWAYD_MQTT", "null", "mqtt: not a JSON object of the table's keys"),
        ("GATEWAYD_DEVICES", "", "devices: not a JSON array of tables"),
        ("GATEWAYD_DEVICES", "not json", "devices: not a JSON array of tables"),
    ],
)
def test_a_variable_that_is_not_json_is_named_without_its_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, text: str, problem: str
) -> None:
    """Not a traceback and exit 1 (systemd restarts that in a loop): a problem like any other.

    The variable is left out, so the file's table under it is still checked.
    """
    monkeypatch.setenv(variable, text)
    found = problems(tmp_path, HEAD + "[mqtt]\nkeepalive_s = 2\n")
    assert found == [
        f"{problem} (from the environment: {variable})",
        "mqtt.keepalive_s: Input should be greater than or equal to 5",
    ]


FILE_DEVICE = (
    '[[devices]]\nname = "file-1"\nproduct_key = "sp"\ndevice_key = "sd"\n'
    '[devices.modbus]\nhost = "127.0.0.1"\n[[devices.points]]\nid = "P"\naddress = 0\n'
)


@pytest.mark.parametrize(
    ("variable", "problem"),
    [
        (
            "GATEWAYD_DEVICES__0__NAME",
            "devices: an array is given whole, as JSON in GATEWAYD_DEVICES, not key by key",
        ),
        (
            "GATEWAYD_DEVICES__NAME",
            "devices: an array is given whole, as JSON in GATEWAYD_DEVICES, not key by key",
        ),
        ("GATEWAYD_GATEWAY__PRODUCT_KEY__X", "gateway.product_key: not a table: it has no key 'x'"),
        ("GATEWAYD_MQTT__PORT__X", "mqtt.port: not a table: it has no key 'x'"),
    ],
)
def test_a_variable_below_a_key_that_has_no_keys_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, problem: str
) -> None:
    """It is left out: the file's good devices are not replaced by what it made of them."""
    monkeypatch.setenv(variable, "x")
    found = problems(tmp_path, HEAD + "[forward]\ninflight = 0\n" + FILE_DEVICE)
    assert found == [
        f"{problem} (from the environment: {variable})",
        "forward.inflight: Input should be greater than or equal to 1",
    ]


@pytest.mark.parametrize(
    ("variable", "problem"),
    [
        ("GATEWAYD_FOO", "foo: unknown section"),
        ("GATEWAYD_MQQT__PORT", "mqqt: unknown section"),
        (
            "GATEWAYD_MQTT_PORT",
            "mqtt_port: unknown section (a key of a section is GATEWAYD_MQTT__PORT, "
            "two underscores)",
        ),
    ],
)
def test_an_unknown_variable_is_named_not_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, problem: str
) -> None:
    """A typo in a variable's name must not leave the file's value (or a default) in force."""
    monkeypatch.setenv(variable, "1883")
    found = problems(tmp_path, HEAD)
    assert found == [f"{problem} (from the environment: {variable})"]


def test_the_variables_that_are_not_configuration_are_still_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in NOT_CONFIGURATION:
        monkeypatch.setenv(name, "set")
    path = tmp_path / "c.toml"
    path.write_text(HEAD)
    assert load_config(path).gateway.device_key == "gd"


def test_every_gatewayd_variable_the_project_reads_is_configuration_or_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each name in the code, CI, the unit and the tests (less those that spell bad names on
    purpose) is accepted, and the README lists those that are not configuration."""
    root = Path(__file__).parents[2]
    files = [*root.glob("gatewayd/**/*.py"), *root.glob(".ci/*"), *root.glob("systemd/*")]
    files += [
        path
        for path in root.glob("tests/**/*.py")
        if not path.name.startswith("test_config") and path.name != "test_cli.py"
    ]
    names = {name for path in files for name in re.findall(r"GATEWAYD_\w+", path.read_text())}
    names -= {"GATEWAYD_"}  # the prefix itself, in config.py
    assert {"GATEWAYD_CONFIG", "GATEWAYD_TEST_FAULT", "GATEWAYD_SYSTEM_TEST"} <= names
    for name in names:
        monkeypatch.setenv(name, "1")  # a config variable's value may be wrong, not its name
    path = tmp_path / "c.toml"
    path.write_text(HEAD)
    try:
        load_config(path)
    except ConfigError as exc:
        assert [problem for problem in exc.problems if "unknown" in problem] == []
    readme = (root / "README.md").read_text()
    assert [name for name in NOT_CONFIGURATION if f"`{name}`" not in readme] == []


def test_the_value_of_an_unknown_key_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It may be a misspelt secret."""
    monkeypatch.setenv("GATEWAYD_GATEWAY__DEVICE_SECRT", "s3cret-value")
    monkeypatch.setenv("GATEWAYD_MQTT__HOTS", "hub.example.net")
    found = problems(tmp_path, HEAD)
    assert found == [
        "gateway.device_secrt: unknown key (from the environment: GATEWAYD_GATEWAY__DEVICE_SECRT)",
        "mqtt.hots: unknown key (from the environment: GATEWAYD_MQTT__HOTS)",
    ]


@pytest.mark.parametrize(
    ("table", "blamed"),
    [('{"host": "h"}', False), ('{"reconnect_min_s": 100}', True)],
)
def test_a_table_given_as_json_is_blamed_only_for_the_keys_it_gave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, blamed: bool
) -> None:
    """It is merged with the file's table: a rule across keys it did not give is the file's."""
    monkeypatch.setenv("GATEWAYD_MQTT", table)
    found = problems(tmp_path, HEAD + "[mqtt]\nreconnect_min_s = 100\nreconnect_max_s = 60\n")
    rule = "mqtt: reconnect_min_s must not exceed reconnect_max_s"
    assert found == [f"{rule} (from the environment: GATEWAYD_MQTT)" if blamed else rule]


def test_the_variables_a_given_dict_overrules_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo passes its own ports and paths as arguments, which outrank the environment: an
    adversary saw GATEWAYD_MQTT__PORT=18883x ignored without a word (exit 0)."""
    monkeypatch.setenv("GATEWAYD_MQTT__PORT", "18883x")
    monkeypatch.setenv("GATEWAYD_QUEUE__MAX_BYTES", "1000000")
    monkeypatch.setenv("GATEWAYD_FORWARD", '{"retry_min_s": 1}')
    data = {"mqtt": {"port": 1883}, "forward": {"retry_min_s": 0.5}}
    assert overruled(Settings, data) == ["GATEWAYD_FORWARD", "GATEWAYD_MQTT__PORT"]
