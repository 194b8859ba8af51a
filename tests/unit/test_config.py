from __future__ import annotations

from pathlib import Path

import pytest

from gatewayd.config import load_config
from gatewayd.errors import ConfigError
from tests.support.example import gateway_credential

EXAMPLE = Path(__file__).parents[2] / "config.example.toml"

MINIMAL = """
[gateway]
product_key = "gp"
device_key = "gd"
device_secret = "s"

[[devices]]
name = "m1"
product_key = "sp"
device_key = "sd"
[devices.modbus]
host = "127.0.0.1"
[[devices.points]]
id = "P"
address = 0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.problems


def test_the_shipped_example_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid once its gateway credential exists and its placeholder secret is replaced."""
    gateway_credential(tmp_path, monkeypatch)
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE)
    assert [p.split(":")[0] for p in info.value.problems] == ["devices[0] (meter-1).device_secret"]
    edited = EXAMPLE.read_text().replace('"change-me-too"', '"the-meter-secret"')
    settings = load_config(write(tmp_path, edited))
    assert settings.devices[0].points[0].id == "Power"
    assert settings.queue.synchronous == "full"


def test_defaults_fill_in_what_is_not_set(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, MINIMAL))
    assert settings.mqtt.port == 11883
    assert settings.forward.batch_max_samples == 500
    assert settings.devices[0].points[0].type == "uint16"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAYD_MQTT__PORT", "18883")
    monkeypatch.setenv("GATEWAYD_QUEUE__PATH", "/tmp/elsewhere.db")
    settings = load_config(write(tmp_path, MINIMAL))
    assert settings.mqtt.port == 18883
    assert str(settings.queue.path) == "/tmp/elsewhere.db"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("address = 0", 'address = 0\ntype = "float33"'),
            "devices[0] (m1).points[0] (P).type: Input should be",
        ),
        (
            ("address = 0", "address = 0\nwidth = 2"),
            "devices[0] (m1).points[0] (P).width: unknown key",
        ),
        (
            ("address = 0", 'address = 0\norder = "CDAB"'),
            "devices[0] (m1).points[0] (P): order 'CDAB' swaps words",
        ),
        (
            (
                "address = 0",
                'address = 0\ntype = "float32"\n[[devices.points]]\nid = "Q"\naddress = 1',
            ),
            "devices[0] (m1): points 'P' and 'Q' overlap in the holding table",
        ),
        (
            ("[devices.modbus]", "interval_s = 0.5\n[devices.modbus]\ntimeout_s = 0.3"),
            "devices[0] (m1): interval_s 0.5 is shorter than one failing read",
        ),
        (("[devices.modbus]", "[devices.modbus]\nmax_gap = 200"), "devices[0] (m1).modbus.max_gap"),
        (
            ("address = 0", "address = -1"),
            "devices[0] (m1).points[0] (P).address: Input should be greater",
        ),
        (
            ("address = 0", 'address = 0\ntype = "string"'),
            "devices[0] (m1).points[0] (P): type 'string' needs length",
        ),
        (("address = 0", 'address = 0\ntable = "coil"\ntype = "int16"'), "table 'coil' holds bits"),
        (
            ('host = "127.0.0.1"', 'transport = "rtu"'),
            "devices[0] (m1).modbus: serial_port is required",
        ),
        (
            ('device_secret = "s"', ""),
            "gateway: device_secret (or device_secret_file, or device_secret_credential) is required",
        ),
        (("[gateway]", "[gateway]\nbogus = 1"), "gateway.bogus: unknown key"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    found = problems(tmp_path, MINIMAL.replace(*change, 1))
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = MINIMAL.replace("address = 0", 'address = -1\ntype = "x"').replace(
        "[gateway]", "[gateway]\nzz = 1"
    )
    assert len(problems(tmp_path, text)) == 3


def test_duplicate_point_ids_and_devices(tmp_path: Path) -> None:
    text = MINIMAL + '[[devices.points]]\nid = "P"\naddress = 1\n'
    assert any("point id 'P' appears twice" in p for p in problems(tmp_path, text))


def test_secret_file_is_read_and_a_missing_one_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    secret.chmod(0o640)  # not readable by others
    text = MINIMAL.replace('device_secret = "s"', f'device_secret_file = "{secret}"')
    assert load_config(write(tmp_path, text)).gateway.secret() == "from-file"
    missing = MINIMAL.replace('device_secret = "s"', 'device_secret_file = "/nonexistent/x"')
    assert any("cannot be read" in p for p in problems(tmp_path, missing))


def test_syntax_errors_and_missing_files(tmp_path: Path) -> None:
    assert "TOML syntax" in problems(tmp_path, "[gateway\n")[0]
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "none.toml")


def test_secrets_do_not_show_in_repr(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, MINIMAL.replace('"s"', '"hunter2"')))
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())


def test_a_bit_may_share_its_register(tmp_path: Path) -> None:
    text = MINIMAL + '[[devices.points]]\nid = "B"\naddress = 0\ntype = "bool"\nbit = 4\n'
    assert len(load_config(write(tmp_path, text)).devices[0].points) == 2


def two_on_one_serial_line(second_also: str) -> str:
    """Two devices on /dev/ttyS1; the second's modbus table also has `second_also`."""
    device = MINIMAL[MINIMAL.index("[[devices]]") :]
    serial = device.replace('host = "127.0.0.1"', 'transport = "rtu"\nserial_port = "/dev/ttyS1"')
    second = serial.replace('name = "m1"', 'name = "m2"').replace(
        'device_key = "sd"', 'device_key = "s2"'
    )
    second = second.replace(
        'serial_port = "/dev/ttyS1"', f'serial_port = "/dev/ttyS1"\n{second_also}'
    )
    return MINIMAL[: MINIMAL.index("[[devices]]")] + serial + second


@pytest.mark.parametrize("setting", ["baudrate = 19200", "local_echo = true"])
def test_devices_on_one_line_must_agree_on_its_settings(tmp_path: Path, setting: str) -> None:
    found = problems(tmp_path, two_on_one_serial_line(setting))
    key = setting.split()[0]  # more in test_config_mixes.py
    assert any(
        p.startswith(f"devices[1] (m2).modbus.{key}: ") and "on the same line (rtu:/dev/ttyS1)" in p
        for p in found
    ), found


def test_local_echo_is_a_serial_lines(tmp_path: Path) -> None:
    found = problems(
        tmp_path, MINIMAL.replace('host = "127.0.0.1"', 'host = "h"\nlocal_echo = true')
    )
    assert any("local_echo is a serial adapter's" in p for p in found), found


def test_serial_lines_get_a_pause_by_default(tmp_path: Path) -> None:
    serial = MINIMAL.replace('host = "127.0.0.1"', 'transport = "rtu"\nserial_port = "/dev/ttyS1"')
    assert load_config(write(tmp_path, serial)).devices[0].modbus.pause_s == 0.02
    assert load_config(write(tmp_path, MINIMAL)).devices[0].modbus.pause_s == 0.0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'[gateway]\nname = "caf\xe9"\n', "not UTF-8 text: byte 0xe9 on line 2"),
        (b"\xef\xbb\xbf[gateway]\n", "byte-order mark"),
    ],
)
def test_a_file_that_is_not_plain_utf8_is_a_config_error(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    """Found by an adversary: a Latin-1 byte crashed `check` and `run` with a traceback (exit 1,
    not 78); a BOM (Notepad) gave 'Invalid statement at line 1' without saying why."""
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any(expected in problem for problem in info.value.problems)
