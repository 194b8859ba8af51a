"""The seeded fault round (see chaos.py): the books must balance, whatever was thrown at it.

CI runs a short round; `pytest -m slow tests/faults/test_chaos.py` runs the long one (over 200
faults). Each prints its table and writes it as JSON (to $GATEWAYD_CHAOS_REPORT when set).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.faults.chaos import (
    DISK_KINDS,
    FAULT_KINDS,
    KILL_WINDOW_S,
    ChaosRig,
    Report,
    write_report,
)
from tests.support.brokers import FrontedBroker as Broker

#: Readings one kill may take with it: the open group and a poll in progress, per meter.
PER_KILL_PER_METER = KILL_WINDOW_S / 0.2 + 1


async def chaos_round(
    tmp_path: Path,
    broker: Broker,
    seed: int,
    faults: int,
    capsys: pytest.CaptureFixture[str],
    kinds: frozenset[str] | None = None,
) -> Report:
    report = await ChaosRig(tmp_path, broker, seed, kinds).run(faults)
    write_report(report, tmp_path / "chaos-report.json")
    if target := os.environ.get("GATEWAYD_CHAOS_REPORT"):
        write_report(report, Path(target))
    with capsys.disabled():
        sys.stdout.write("\n" + report.table() + "\n")
    return report


def check_books(report: Report) -> None:
    assert report.faults_total >= 1
    assert report.produced > 0
    assert report.lost_unexplained == 0, report.table()
    assert report.delivered + report.rejected + report.lost == report.produced
    kills = report.faults.get("kill9", 0)
    assert report.lost_at_kill <= kills * PER_KILL_PER_METER * 3, report.table()
    assert report.lost_at_modbus_drop <= (report.faults.get("modbus_down", 0) + 1) * 3
    assert report.lost_at_damage <= report.counted_lost_corrupt, report.table()
    assert report.lost_at_disk_full <= report.counted_lost_disk, report.table()
    assert report.duplicated <= report.duplicate_allowance, report.table()
    assert report.queue_left == 0
    assert report.parked_delivered == 0 and report.parked_queued > 0, report.table()
    assert report.secrets_in_log == []


async def test_short_seeded_chaos_round(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    report = await chaos_round(tmp_path, broker, seed=20261125, faults=36, capsys=capsys)
    check_books(report)
    assert set(report.faults) == set(FAULT_KINDS) - DISK_KINDS, "every kind of fault was played"


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_long_seeded_chaos_round(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    kinds = frozenset(FAULT_KINDS)  # with the queue's own: damage, a full disk, clock steps
    report = await chaos_round(tmp_path, broker, seed=7, faults=220, capsys=capsys, kinds=kinds)
    check_books(report)
    assert report.faults_total >= 200
