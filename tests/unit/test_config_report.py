"""`check` tells all at once: every problem in one run, devices and points named, types strict."""

from __future__ import annotations

import json
import os
import time
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

# Six mistakes an operator made at once (issue 17): a port and a scale written as strings, an
# unknown type, two overlapping points, a secret file that is missing, and an interval shorter
# than one failing read.
SIX_MISTAKES = (
    HEAD
    + """
[[devices]]
name = "meter-1"
product_key = "sp"
device_key = "sd"
device_secret_file = "/nonexistent/meter-1.secret"
interval_s = 0.5

[devices.modbus]
host = "127.0.0.1"
port = "5020"
timeout_s = 0.5
retries = 1

[[devices.points]]
id = "Power"
address = 0
type = "float32"

[[devices.points]]
id = "Voltage"
address = 2
scale = "0.1"

[[devices.points]]
id = "Current"
address = 3
type = "float33"

[[devices.points]]
id = "Freq"
address = 5

[[devices.points]]
id = "Energy"
address = 6
type = "uint32"

[[devices.points]]
id = "EnergyHigh"
address = 7
"""
)


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_six_mistakes_are_reported_in_one_run(tmp_path: Path) -> None:
    found = problems(tmp_path, SIX_MISTAKES)
    text = "\n".join(found)
    dev = "devices[0] (meter-1)"
    assert f"{dev}.modbus.port: " in text, text
    assert f"{dev}.points[1] (Voltage).scale: " in text, text
    assert f"{dev}.points[2] (Current).type: " in text, text
    assert f"{dev}.device_secret_file: " in text and "cannot be read" in text, text
    assert (
        f"{dev}: points 'Energy' and 'EnergyHigh' overlap in the holding table "
        "(registers 6-7 and 7-7)" in text
    ), text
    assert f"{dev}: interval_s 0.5 is shorter than one failing read" in text, text
    assert len(found) == 6, text


def test_strings_for_numbers_are_refused_with_a_hint(tmp_path: Path) -> None:
    found = problems(tmp_path, SIX_MISTAKES)
    port = next(p for p in found if ".modbus.port" in p)
    assert "integer" in port and "5020" in port, port
    scale = next(p for p in found if ".scale" in p)
    assert "number" in scale and "0.1" in scale, scale


def test_the_environment_may_still_give_numbers_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAYD_MQTT__PORT", "18883")
    path = tmp_path / "c.toml"
    path.write_text(HEAD)
    assert load_config(path).mqtt.port == 18883


def point_problem(tmp_path: Path, point: str, modbus: str = "") -> list[str]:
    text = (
        HEAD
        + '[[devices]]\nname = "m1"\nproduct_key = "sp"\ndevice_key = "sd"\n'
        + f'[devices.modbus]\nhost = "127.0.0.1"\n{modbus}\n'
        + f'[[devices.points]]\nid = "P"\n{point}\n'
    )
    return problems(tmp_path, text)


@pytest.mark.parametrize(
    ("point", "modbus", "expected"),
    [
        (
            'address = 0\ntype = "string"\nlength = 4\norder = "CDAB"',
            "",
            "devices[0] (m1).points[0] (P): order 'CDAB' swaps words, but a string",
        ),
        (
            'address = 0\ntype = "string"\nlength = 4\norder = "DCBA"',
            "",
            "devices[0] (m1).points[0] (P): order 'DCBA' swaps words, but a string",
        ),
        (
            'address = 0\ntype = "bool"\nbit = 3\norder = "BADC"',
            "",
            "devices[0] (m1).points[0] (P): order is meaningless on a bit",
        ),
        (
            'address = 65535\ntype = "float32"\n',
            "",
            "devices[0] (m1).points[0] (P): registers 65535-65536 run past 65535",
        ),
        ("address = 0", 'transport = "rtu_over_tcp"\nunit_id = 0', "unit_id 0 is the broadcast"),
    ],
)
def test_rules_from_the_modbus_issue(
    tmp_path: Path, point: str, modbus: str, expected: str
) -> None:
    found = problems(tmp_path, point_problem_text(point, modbus))
    assert any(expected in p for p in found), found


def point_problem_text(point: str, modbus: str) -> str:
    return (
        HEAD
        + '[[devices]]\nname = "m1"\nproduct_key = "sp"\ndevice_key = "sd"\n'
        + f'[devices.modbus]\nhost = "127.0.0.1"\n{modbus}\n'
        + f'[[devices.points]]\nid = "P"\n{point}\n'
    )


SHORT = (
    "interval_s 0.1 is shorter than one failing read (modbus.timeout_s 1 x (retries 1 + 1) = 2s)"
)


@pytest.mark.parametrize("bad", ['port = "x"', "port = 70000", 'transport = "tpc"', 'parity = "X"'])
def test_a_bad_modbus_key_does_not_hide_a_short_interval(tmp_path: Path, bad: str) -> None:
    """The interval needs only timeout_s and retries: a bad port or transport says nothing of
    them (a bad timeout_s or retries does hide it: a failing read cannot be timed without)."""
    text = point_problem_text("address = 0", f"timeout_s = 1.0\n{bad}")
    found = problems(
        tmp_path, text.replace('device_key = "sd"\n', 'device_key = "sd"\ninterval_s = 0.1\n')
    )
    assert f"devices[0] (m1): {SHORT}" in found, found


def test_a_bad_modbus_key_from_the_environment_does_not_hide_a_short_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modbus = {"host": "h", "port": "x", "timeout_s": 1.0}
    device = {"name": "e", "product_key": "p", "device_key": "d", "interval_s": 0.1}
    points = [{"id": "P", "address": 0}]
    monkeypatch.setenv(
        "GATEWAYD_DEVICES", json.dumps([{**device, "modbus": modbus, "points": points}])
    )
    found = problems(tmp_path, HEAD)
    assert f"devices[0] (e): {SHORT} (from the environment: GATEWAYD_DEVICES)" in found, found


def test_a_last_register_at_65535_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(point_problem_text('address = 65534\ntype = "int32"', ""))
    assert load_config(path).devices[0].points[0].address == 65534


def test_unit_id_0_on_rtu_is_the_broadcast(tmp_path: Path) -> None:
    text = point_problem_text("address = 0", "").replace(
        'host = "127.0.0.1"', 'transport = "rtu"\nserial_port = "/dev/ttyS0"\nunit_id = 0'
    )
    found = problems(tmp_path, text)
    assert any(p.startswith("devices[0] (m1).modbus: unit_id 0 is the broadcast") for p in found)


@pytest.mark.parametrize("bad", ["a+b", "a#b", "a/b", "a\\u0000b", ""])
def test_hub_keys_must_be_safe_in_topics(tmp_path: Path, bad: str) -> None:
    text = HEAD.replace('device_key = "gd"', f'device_key = "{bad}"') + point_problem_text(
        "address = 0", ""
    ).removeprefix(HEAD).replace('device_key = "sd"', f'device_key = "{bad}"')
    found = problems(tmp_path, text)
    assert any(p.startswith("gateway.device_key: ") for p in found), found
    assert any(p.startswith("devices[0] (m1).device_key: ") for p in found), found


def test_a_thousand_devices_of_a_hundred_points_check_in_seconds(tmp_path: Path) -> None:
    parts = [HEAD]
    for d in range(1000):
        parts.append(
            f'[[devices]]\nname = "m{d}"\nproduct_key = "sp"\ndevice_key = "d{d}"\n'
            f'interval_s = 5.0\n[devices.modbus]\nhost = "10.0.{d // 250}.{d % 250 + 1}"\n'
        )
        parts += [
            f'[[devices.points]]\nid = "p{p}"\naddress = {2 * p}\ntype = "float32"\n'
            for p in range(100)
        ]
    path = tmp_path / "big.toml"
    path.write_text("".join(parts))
    started = time.process_time()
    settings = load_config(path)
    spent = time.process_time() - started
    assert sum(len(d.points) for d in settings.devices) == 100_000
    # CPU time, so other work on a shared machine does not count; 61 s wall before the fix.
    assert spent < 8.0, spent


def test_readable_by_others_secret_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("real-secret-123\n")
    secret.chmod(0o644)
    text = HEAD.replace('device_secret = "gateway-s3cret"', f'device_secret_file = "{secret}"')
    found = problems(tmp_path, text)
    assert any(
        p.startswith("gateway.device_secret_file: ") and "readable by others" in p for p in found
    ), found
    secret.chmod(0o640)
    path = tmp_path / "c.toml"
    assert load_config(path).gateway.secret() == "real-secret-123"


@pytest.mark.parametrize("placeholder", ["change-me", "CHANGE-ME-too", "changeme", "replace-me"])
def test_placeholder_secrets_are_refused(tmp_path: Path, placeholder: str) -> None:
    text = HEAD.replace('"gateway-s3cret"', f'"{placeholder}"')
    found = problems(tmp_path, text)
    assert any(p.startswith("gateway.device_secret: ") and "placeholder" in p for p in found)
    assert not any(placeholder in p for p in found), "a secret must never be printed"


def test_secrets_come_from_the_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "gateway").write_text("from-systemd\n")
    (creds / "gateway").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    text = HEAD.replace('device_secret = "gateway-s3cret"', 'device_secret_credential = "gateway"')
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert load_config(path).gateway.secret() == "from-systemd"
    path.write_text(text.replace('"gateway"', '"nosuch"'))
    found = problems(tmp_path, text.replace('"gateway"', '"nosuch"'))
    assert any(
        p.startswith("gateway.device_secret_credential: ") and str(creds) in p for p in found
    ), found
    assert os.environ["CREDENTIALS_DIRECTORY"] == str(creds)
