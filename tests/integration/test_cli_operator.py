"""Small things an operator trips on (issue 17): times, widths, help texts, exit codes, plurals."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from gatewayd.cli import main
from gatewayd.model import Sample
from gatewayd.queue.store import Store, connect, migrate

ROOT = Path(__file__).parents[2]
NOW_MS = 1_795_000_000_000  # 2026-11-18


def queue_file(tmp_path: Path) -> Path:
    path = tmp_path / "q.db"
    store = Store(connect(path))
    migrate(store.conn)
    store.insert([Sample("productKeyLong", "meter-with-a-long-name-01", NOW_MS, {"P": 1.5})])
    store.set_state({"uplink": "up", "uplink_since_ms": NOW_MS, "last_reply_ms": NOW_MS + 5})
    store.conn.close()
    return path


def test_queue_stats_shows_every_time_the_same_way(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["queue", "stats", "--db", str(queue_file(tmp_path))])
    assert result.exit_code == 0, result.output
    assert not re.search(r"\b1\d{12}\b", result.output), result.output  # no raw epoch ms
    assert "2026-11-18T" in result.output.split("uplink since")[1].splitlines()[0], result.output


def test_peek_keeps_time_and_device_whole_at_80_columns(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["queue", "peek", "--db", str(queue_file(tmp_path))], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    assert "productKeyLong/meter-with-a-long-name-01" in result.output, result.output
    assert re.search(r"2026-11-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", result.output), result.output


def test_sim_modbus_help_lists_its_points_without_pointing_at_itself() -> None:
    result = CliRunner().invoke(main, ["sim", "modbus", "--help"])
    assert "Power" in result.output and "Breaker" in result.output
    assert "see `gatewayd sim modbus --help`" not in " ".join(result.output.split())


def test_export_has_no_meaningless_json_flag() -> None:
    command = main.commands["queue"]
    assert isinstance(command, click.Group)
    assert "as_json" not in [p.name for p in command.commands["export"].params]


def test_poll_of_an_unknown_device_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[gateway]\nproduct_key = "g"\ndevice_key = "g"\ndevice_secret = "s3cr3t"\n'
        '[[devices]]\nname = "m1"\nproduct_key = "p"\ndevice_key = "d"\n'
        '[devices.modbus]\nhost = "127.0.0.1"\n[[devices.points]]\nid = "P"\naddress = 0\n'
    )
    result = CliRunner().invoke(main, ["poll", "-c", str(config), "--device", "nosuch"])
    assert result.exit_code == 2, result.output
    assert "nosuch" in result.output and "m1" in result.output  # names what exists


def test_the_readme_documents_run_log_level() -> None:
    assert "--log-level" in (ROOT / "README.md").read_text()
