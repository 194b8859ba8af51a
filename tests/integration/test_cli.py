"""The command line, through click's runner on real files and as real subprocesses."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gatewayd.cli import main
from gatewayd.config import QueueConfig
from gatewayd.model import Sample
from gatewayd.queue.store import SampleQueue
from tests.support.cli import gatewayd_cli
from tests.support.example import finished_example_text
from tests.support.modbus import KNOWN_VALUES, KnownModbusServer

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "config.example.toml"


def edited_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example as an operator finishes it: the gateway's credential and the meter's secret."""
    path = tmp_path / "config.toml"
    path.write_text(finished_example_text(tmp_path, monkeypatch))
    return path


def test_check_prints_the_read_plan_and_hides_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = CliRunner().invoke(main, ["check", "-c", str(edited_example(tmp_path, monkeypatch))])
    assert result.exit_code == 0, result.output
    assert "meter-1" in result.output and "Power:float32" in result.output
    assert "secret-value" not in result.output
    assert "ok: 1 device, 6 points" in result.output
    # Power(0-1), Voltage(2), Energy(4-5) cannot merge across the gap at 3 without max_gap.
    assert re.search(r"holding\s+│\s+0\s+│\s+3", result.output)


def test_check_names_every_bad_key_and_exits_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = (
        edited_example(tmp_path, monkeypatch)
        .read_text()
        .replace('type = "float32"', 'type = "float33"', 1)
    )
    bad = bad.replace("inflight = 4", "inflight = 0")
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    result = CliRunner().invoke(main, ["check", "-c", str(path)])
    assert result.exit_code == 78
    assert "devices[0] (meter-1).points[0] (Power).type" in result.output
    assert "forward.inflight" in result.output
    assert "Traceback" not in result.output


def test_check_names_the_environment_s_bad_value_not_the_file_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both the file and GATEWAYD_MQTT__PORT are wrong; the variable's value is the one used."""
    text = edited_example(tmp_path, monkeypatch).read_text()
    bad = text.replace("inflight = 4", "inflight = 0").replace("port = 11883", 'port = "11883"')
    assert bad.count('port = "11883"') == 1
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    env = {"GATEWAYD_MQTT__PORT": "18883x"}
    result = CliRunner().invoke(main, ["check", "-c", str(path)], env=env)
    assert result.exit_code == 78, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    port = "mqtt.port: Input should be a valid integer, unable to parse string as an integer"
    assert f"{port} (from the environment: GATEWAYD_MQTT__PORT='18883x')" in lines, lines
    assert "11883" not in result.output
    assert any(line.startswith("forward.inflight: ") for line in lines), lines


@pytest.mark.parametrize(
    ("command", "variable", "text", "problem"),
    [
        (["check"], "GATEWAYD_MQTT", '{"port": 1883', "mqtt: not a JSON object"),
        (["run"], "GATEWAYD_MQTT", '{"port": 1883', "mqtt: not a JSON object"),
        (["queue", "stats"], "GATEWAYD_DEVICES", "", "devices: not a JSON array"),
        (["check"], "GATEWAYD_MQTT_PORT", "1883", "mqtt_port: unknown section"),
    ],
)
def test_a_bad_variable_is_a_config_error_of_every_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    variable: str,
    text: str,
    problem: str,
) -> None:
    """Exit 78, which systemd does not restart (RestartPreventExitStatus), not a traceback's 1."""
    path = edited_example(tmp_path, monkeypatch)
    result = CliRunner().invoke(main, [*command, "-c", str(path)], env={variable: text})
    assert result.exit_code == 78, (result.output, result.exception)
    lines = [line.strip() for line in result.output.splitlines()]
    assert any(
        line.startswith(problem) and line.endswith(f"(from the environment: {variable})")
        for line in lines
    ), lines


def test_the_demo_names_a_bad_variable_and_exits_78() -> None:
    """The demo has no file, but the environment is laid over its config as over any other."""
    result = CliRunner().invoke(main, ["demo"], env={"GATEWAYD_FOO": "1"})
    assert result.exit_code == 78, (result.output, result.exception)
    assert "foo: unknown section (from the environment: GATEWAYD_FOO)" in result.output


def test_config_path_comes_from_the_environment(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check"], env={"GATEWAYD_CONFIG": str(tmp_path / "x.toml")})
    assert result.exit_code == 78 and "file not found" in result.output


async def test_queue_stats_as_json(tmp_path: Path) -> None:
    queue = SampleQueue(QueueConfig(path=tmp_path / "q.db"))
    await queue.open()
    ts = (int(time.time()) - 86_400) * 1000
    queue.put(Sample("pk", "dk", ts, {"a": 1, "b": 2}))
    await queue.close()
    result = CliRunner().invoke(main, ["queue", "stats", "--db", str(tmp_path / "q.db"), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["pending_samples"] == 1 and figures["pending_points"] == 2
    assert figures["oldest_ts_ms"] == ts
    human = CliRunner().invoke(main, ["queue", "stats", "--db", str(tmp_path / "q.db")])
    day = time.strftime("%Y-%m-%d", time.gmtime(ts / 1000))
    assert "pending samples" in human.output and day in human.output


def test_queue_stats_of_a_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["queue", "stats", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 1
    assert "no queue file" in result.output and "Traceback" not in result.output


async def test_poll_prints_decoded_values_from_a_real_device(
    tmp_path: Path, known_modbus: KnownModbusServer
) -> None:
    from tests.support.modbus import KNOWN_POINTS

    lines = ['[gateway]\nproduct_key="g"\ndevice_key="g"\ndevice_secret="s"']
    for name, port in (("good", known_modbus.port), ("dead", 1)):
        lines.append(
            f'[[devices]]\nname="{name}"\nproduct_key="p"\ndevice_key="{name}"\n'
            f'[devices.modbus]\nhost="127.0.0.1"\nport={port}\ntimeout_s=0.5\nretries=0'
        )
        for point in KNOWN_POINTS:
            fields = "\n".join(f"{k} = {json.dumps(v)}" for k, v in point.items())
            lines.append(f"[[devices.points]]\n{fields}")
    config = tmp_path / "c.toml"
    config.write_text("\n".join(lines))

    async def gatewayd(*args: str) -> tuple[int, str]:
        return await gatewayd_cli(*args, "-c", str(config))

    code, out = await gatewayd("poll", "--device", "good")
    assert code == 0, out
    for point_id, value in KNOWN_VALUES.items():
        assert re.search(rf"{point_id}\s+│\s+{re.escape(json.dumps(value))}", out), out
    code, out = await gatewayd("poll")
    assert code == 1 and "dead" in out


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and "gatewayd" in result.output


def _commands(group: click.Group, prefix: str = "gatewayd") -> list[str]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
        else:
            found.append(f"{prefix} {name}")
    return found


def test_every_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [c for c in _commands(main) if f"`{c}" not in readme]
    assert not missing, f"commands missing from README.md: {missing}"
