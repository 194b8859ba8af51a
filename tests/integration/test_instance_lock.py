"""One daemon per queue file: a second `gatewayd run` is refused; the queue commands still work."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from gatewayd.queue.store import read_stats
from gatewayd.sim.hub import HubSimulator
from tests.support.brokers import Broker
from tests.support.child import Child
from tests.support.daemon import config_data, modbus_device, write_config
from tests.support.modbus import KNOWN_POINTS, KnownModbusServer


def gatewayd(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatewayd", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


async def test_a_second_daemon_on_the_same_queue_is_refused(
    tmp_path: Path, broker: Broker, hub: HubSimulator, known_modbus: KnownModbusServer
) -> None:
    hub.register("subPK", "dev1", "secret-of-dev1")
    devices = [modbus_device("dev1", known_modbus.port, 1, KNOWN_POINTS, 0.2)]
    queue = tmp_path / "q.db"
    data = config_data(tmp_path, broker.port, devices, queue={"path": str(queue)})
    config = write_config(tmp_path / "config.toml", data)
    first = Child(config, tmp_path / "notify.sock", log_level="INFO")
    await first.start()
    try:
        assert await asyncio.to_thread(hub.wait_for, lambda h: h.delivered_count() >= 3, 20)
        second = await asyncio.to_thread(gatewayd, "run", "-c", str(config))
        assert second.returncode == 1, second.stderr
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, second.stderr
        assert "already" in lines[0] and str(queue) in lines[0] and str(first.proc.pid) in lines[0]
        assert first.alive  # the first one is untouched
        # Reading commands work beside the running daemon ...
        stats = await asyncio.to_thread(gatewayd, "queue", "stats", "--db", str(queue), "--json")
        assert stats.returncode == 0 and json.loads(stats.stdout)["state"]["queued"] > 0
        peek = await asyncio.to_thread(gatewayd, "queue", "peek", "--db", str(queue), "--json")
        assert peek.returncode == 0 and isinstance(json.loads(peek.stdout), list)
        # ... and so do the writing ones, through SQLite's own locking (README: queue commands).
        purge = await asyncio.to_thread(
            gatewayd, "queue", "purge", "--yes", "--db", str(queue), "--json"
        )
        assert purge.returncode == 0 and "purged" in json.loads(purge.stdout)
        vacuum = await asyncio.to_thread(gatewayd, "queue", "vacuum", "--db", str(queue))
        assert vacuum.returncode == 0, vacuum.stderr
        mark = hub.delivered_count()
        assert await asyncio.to_thread(hub.wait_for, lambda h: h.delivered_count() > mark, 20)
    finally:
        assert await first.stop() == 0
    # The lock went with the process: a new daemon on the same queue starts.
    again = Child(config, tmp_path / "notify2.sock")
    await again.start()
    assert await again.stop() == 0
    stats_after = read_stats(queue)
    assert stats_after.state["purged"] >= 0


def test_an_unexpected_failure_at_start_is_one_line_and_exit_1(
    tmp_path: Path, broker: Broker
) -> None:
    """A metrics port already taken is no GatewaydError; still no traceback for the operator."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = config_data(
            tmp_path,
            broker.port,
            [modbus_device("dev1", 1, 1, KNOWN_POINTS)],
            metrics={"listen": f"127.0.0.1:{port}"},
        )
        config = write_config(tmp_path / "config.toml", data)
        result = gatewayd("run", "-c", str(config), "--log-level", "ERROR")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Address already in use" in lines[0], result.stderr
