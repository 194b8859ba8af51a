"""A corpus of broken configs: each exits 78, names the key, shows no traceback and no secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gatewayd.cli import main

SECRET = "Sup3r-Secret-Value"

GOOD = f"""
[gateway]
product_key = "gp"
device_key = "gd"
device_secret = "{SECRET}"

[mqtt]
host = "127.0.0.1"
port = 11883

[queue]
path = "/tmp/gatewayd-test-queue.db"

[forward]
inflight = 4

[[devices]]
name = "m1"
product_key = "sp"
device_key = "sd"
device_secret = "{SECRET}-sub"
interval_s = 5.0

[devices.modbus]
transport = "tcp"
host = "127.0.0.1"
port = 502
unit_id = 1

[[devices.points]]
id = "P"
table = "holding"
address = 0
type = "float32"
order = "ABCD"
"""

# (what to replace, replacement, the key path the error must name)
CASES: list[tuple[str, str, str]] = [
    ('type = "float32"', 'type = "float33"', "devices[0] (m1).points[0] (P).type"),
    ('type = "float32"', "type = 32", "devices[0] (m1).points[0] (P).type"),
    ('order = "ABCD"', 'order = "ABDC"', "devices[0] (m1).points[0] (P).order"),
    (
        'type = "float32"\norder = "ABCD"',
        'type = "int16"\norder = "CDAB"',
        "devices[0] (m1).points[0] (P)",
    ),
    ('table = "holding"', 'table = "holdings"', "devices[0] (m1).points[0] (P).table"),
    ('table = "holding"', 'table = "coil"', "devices[0] (m1).points[0] (P)"),
    ("address = 0", "address = -3", "devices[0] (m1).points[0] (P).address"),
    ("address = 0", "address = 70000", "devices[0] (m1).points[0] (P).address"),
    ("address = 0", 'address = "zero"', "devices[0] (m1).points[0] (P).address"),
    ('type = "float32"', 'type = "string"', "devices[0] (m1).points[0] (P)"),
    ('id = "P"', 'id = ""', "devices[0] (m1).points[0].id"),
    ('id = "P"', 'id = "P"\nwidth = 2', "devices[0] (m1).points[0] (P).width"),
    (
        'order = "ABCD"',
        'order = "ABCD"\n[[devices.points]]\nid = "Q"\naddress = 1',
        "devices[0] (m1)",
    ),
    (
        'order = "ABCD"',
        'order = "ABCD"\n[[devices.points]]\nid = "P"\naddress = 9',
        "devices[0] (m1)",
    ),
    ('order = "ABCD"', 'order = "ABCD"\nbit = 3', "devices[0] (m1).points[0] (P)"),
    ('transport = "tcp"', 'transport = "udp"', "devices[0] (m1).modbus.transport"),
    ('transport = "tcp"', 'transport = "rtu"', "devices[0] (m1).modbus"),
    ('host = "127.0.0.1"\nport = 502', "port = 502", "devices[0] (m1).modbus"),
    ("unit_id = 1", "unit_id = 300", "devices[0] (m1).modbus.unit_id"),
    ("unit_id = 1", 'unit_id = 1\nparity = "X"', "devices[0] (m1).modbus.parity"),
    ("unit_id = 1", "unit_id = 1\ntimeout_s = 10", "devices[0] (m1)"),
    ("interval_s = 5.0", "interval_s = 0", "devices[0] (m1).interval_s"),
    ('name = "m1"', 'name = "m 1"', "devices[0] (m 1).name"),
    ('name = "m1"', 'nam = "m1"', "devices[0].nam"),
    ("[devices.modbus]", "[devices.modbbus]", "devices[0] (m1).modbbus"),
    (f'device_secret = "{SECRET}"\n', "", "gateway"),
    (
        f'device_secret = "{SECRET}"\n',
        f'device_secret = "{SECRET}"\ndevice_secret_file = "/x"\n',
        "gateway",
    ),
    (f'device_secret = "{SECRET}"\n', 'device_secret_file = "/nonexistent/secret"\n', "gateway"),
    ('product_key = "gp"', 'product_key = ""', "gateway.product_key"),
    ("port = 11883", "port = 0", "mqtt.port"),
    ("port = 11883", 'port = "11883x"', "mqtt.port"),
    ("port = 11883", "port = 11883\nreconnect_min_s = 90", "mqtt"),
    ("port = 11883", 'port = 11883\ncert_file = "/c.pem"', "mqtt"),
    ("inflight = 4", "inflight = 0", "forward.inflight"),
    ("inflight = 4", "inflight = 4\nbatch_max_bytes = 600000", "forward.batch_max_bytes"),
    ("inflight = 4", "inflight = 4\nbogus = true", "forward.bogus"),
    (
        'path = "/tmp/gatewayd-test-queue.db"',
        'path = "/tmp/q.db"\noverflow = "drop_middle"',
        "queue.overflow",
    ),
    (
        'path = "/tmp/gatewayd-test-queue.db"',
        'path = "/tmp/q.db"\nsynchronous = "off"',
        "queue.synchronous",
    ),
    (
        'path = "/tmp/gatewayd-test-queue.db"',
        'path = "/tmp/q.db"\nmax_bytes = 10',
        "queue.max_bytes",
    ),
    ("[forward]", "[forwarding]", "forwarding"),
]


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["check", "-c", str(path)])
    return result.exit_code, result.output


def test_the_good_config_is_good(tmp_path: Path) -> None:
    code, out = check(tmp_path, GOOD)
    assert code == 0, out
    assert SECRET not in out


@pytest.mark.parametrize(("old", "new", "key"), CASES, ids=[c[2] + ":" + c[1][:24] for c in CASES])
def test_a_broken_config_is_refused_by_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    assert old in GOOD
    code, out = check(tmp_path, GOOD.replace(old, new, 1))
    assert code == 78, out
    assert any(line.strip().startswith(key) for line in out.splitlines()), out
    assert "Traceback" not in out
    assert SECRET not in out


@pytest.mark.parametrize("text", ["[gateway\n", "x = = 1\n", "\x00\x01binary", ""])
def test_unreadable_files_are_refused_cleanly(tmp_path: Path, text: str) -> None:
    code, out = check(tmp_path, text)
    assert code == 78 and "Traceback" not in out


def test_an_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("")
    secret.chmod(0o600)
    code, out = check(
        tmp_path,
        GOOD.replace(f'device_secret = "{SECRET}"\n', f'device_secret_file = "{secret}"\n', 1),
    )
    assert code == 78 and "device_secret_file" in out and "is empty" in out
