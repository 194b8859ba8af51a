"""What `gatewayd run` spends before READY (issue 18: READY within 2 s under a quarter-core quota).

Under a CPU quota every import and every object made before READY delays it; bench/poll.py
`--cpu-quota 25` measures the time. These tests hold what the start leaves out: libraries only
some runs need (rich for people, prometheus_client for /metrics) or only the first read needs
(pymodbus) or only a queue file that needs a migration needs (sqlite-utils), and the cyclic
garbage collector, off until READY.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from gatewayd.cli import main
from gatewayd.early import hold_collections, resume_collections
from gatewayd.sim.broker import free_port
from tests.support.brokers import Broker
from tests.support.daemon import config_data, modbus_device, write_config

#: The daemon as `python -m gatewayd run` starts it, up to READY, then stopped.
UNTIL_READY = """
import asyncio, gc, json, sys
from gatewayd.early import hold_collections
hold_collections()  # as gatewayd/__main__.py does
import gatewayd.cli  # noqa: F401 - the command line the process starts from
from gatewayd.config import load_config
from gatewayd.runtime.daemon import Daemon
from gatewayd.runtime.notify import Notifier

at_ready = {}

def ready(self, status):  # what was loaded when READY=1 went out (the first polls come after)
    libraries = ("rich", "prometheus_client", "pymodbus", "sqlite_utils")
    at_ready["loaded"] = [m for m in libraries if m in sys.modules]
    return True

Notifier.ready = ready

async def main():
    daemon = Daemon(load_config(sys.argv[1]), shutdown_timeout_s=1)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await asyncio.wait_for(daemon.started.wait(), 30)
    at_ready["collecting"] = gc.isenabled()  # READY and the resume come in the same step
    print(json.dumps(at_ready), flush=True)
    stop.set()
    await asyncio.wait_for(task, 30)

asyncio.run(main())
"""


def test_run_starts_without_what_it_does_not_need_yet(tmp_path: Path, broker: Broker) -> None:
    device = modbus_device("m1", free_port(), 1, [{"id": "P", "address": 0}], 1.0)
    config = write_config(tmp_path / "c.toml", config_data(tmp_path, broker.port, [device]))
    for start in ("first", "restart"):
        done = subprocess.run(
            [sys.executable, "-c", UNTIL_READY, str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        at_ready = json.loads(done.stdout.splitlines()[0])
        # rich, prometheus_client (no /metrics here), pymodbus; sqlite-utils only to create
        # the queue file (its migrations), not to open it again
        assert at_ready["loaded"] == ([] if start == "restart" else ["sqlite_utils"])
        assert at_ready["collecting"]  # held while starting, back on once READY is sent


def test_commands_other_than_run_collect_as_usual(tmp_path: Path) -> None:
    hold_collections()  # as `python -m gatewayd` starts every command
    try:
        result = CliRunner().invoke(main, ["check", "-c", str(tmp_path / "missing.toml")])
        assert result.exit_code == 78
        assert gc.isenabled()
    finally:
        resume_collections()
