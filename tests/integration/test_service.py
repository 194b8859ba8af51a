"""gatewayd run under a systemd-like supervisor: notify protocol, watchdog, stop signals, unit."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.queue.store import read_stats
from gatewayd.sim.hub import HubSimulator
from tests.support.brokers import Broker
from tests.support.daemon import (
    config_data,
    modbus_device,
    register_file,
    start_gatewayd,
    stop_gatewayd,
    write_config,
)
from tests.support.modbus import KNOWN_POINTS, KnownModbusServer

ROOT = Path(__file__).parents[2]


def service_config(
    tmp_path: Path, broker: Broker, modbus_port: int, units: tuple[int, ...] = (1,)
) -> Path:
    devices = [modbus_device(f"dev{u}", modbus_port, u, KNOWN_POINTS, 0.2) for u in units]
    data = config_data(
        tmp_path,
        broker.port,
        devices,
        queue={"path": str(tmp_path / "q.db")},
        forward={"reply_timeout_s": 60},
    )
    return write_config(tmp_path / "config.toml", data)


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    async def until(self, predicate, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while not predicate(self.messages):
                self.messages.append((await loop.sock_recv(self.sock, 4096)).decode())

    def close(self) -> None:
        self.sock.close()


async def test_ready_watchdog_status_and_a_second_signal(
    tmp_path: Path, broker: Broker, hub: HubSimulator, known_modbus: KnownModbusServer
) -> None:
    config = service_config(tmp_path, broker, known_modbus.port)
    register_file(hub, config)
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    proc = await start_gatewayd("run", "-c", str(config), env=env)
    try:
        await notify.until(lambda m: sum("WATCHDOG=1" in x for x in m) >= 3)
        first_ready = next(i for i, x in enumerate(notify.messages) if "READY=1" in x)
        first_watchdog = next(i for i, x in enumerate(notify.messages) if "WATCHDOG=1" in x)
        assert first_ready < first_watchdog  # ready only once really up
        status = [x for x in notify.messages if "STATUS=pending=" in x]
        assert status and "uplink=connected" in status[-1]
        # The hub stops answering: requests stay in flight (reply_timeout_s is 60).
        hub.set_faults(drop=True)
        await asyncio.to_thread(
            hub.wait_for, lambda h: h.requests and h.requests[-1].code is None, 10
        )
        proc.send_signal(signal.SIGTERM)  # graceful: would wait for the replies ...
        await notify.until(lambda m: any("STOPPING=1" in x for x in m))
        proc.send_signal(signal.SIGTERM)  # ... but a second signal stops the waiting
        async with asyncio.timeout(8):
            _, err = await proc.communicate()
    finally:
        notify.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = err.decode()
    assert proc.returncode == 0, log
    assert "stop_hurried" in log and "stopped_with_unanswered" in log
    assert "stopped pending=" in log
    stats = read_stats(tmp_path / "q.db")
    assert stats.state["queued"] == stats.state["sent"] + stats.pending_samples
    assert stats.pending_samples > 0  # the unanswered ones stayed queued


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_unit_file_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "systemd" / "gatewayd.service").read_text()
    for needed in (
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=gatewayd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "SupplementaryGroups=dialout",
        "RestartPreventExitStatus=78",
    ):
        assert needed in unit
    copy = tmp_path / "gatewayd.service"
    copy.write_text(
        unit.replace(
            "ExecStart=/opt/gatewayd/venv/bin/gatewayd run",
            f"ExecStart={sys.executable} -m gatewayd run",
        )
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "gatewayd.service" not in result.stderr, result.stderr


async def test_sighup_adds_a_device_and_refuses_a_broken_config(
    tmp_path: Path, broker: Broker, hub: HubSimulator, known_modbus: KnownModbusServer
) -> None:
    config = service_config(tmp_path, broker, known_modbus.port, units=(1,))
    register_file(hub, config)
    hub.register("subPK", "dev2", "secret-of-dev2")  # created ahead of its SIGHUP
    proc = await start_gatewayd("run", "-c", str(config))

    def seen(device: str, after: int = 0):  # type: ignore[no-untyped-def]
        return lambda h: any(d.device_key == device for d in h.deliveries[after:])

    try:
        assert await asyncio.to_thread(hub.wait_for, seen("dev1"), 20)
        service_config(tmp_path, broker, known_modbus.port, units=(1, 2))
        proc.send_signal(signal.SIGHUP)
        assert await asyncio.to_thread(hub.wait_for, seen("dev2"), 20)  # added, logged in, polled
        config.write_text(config.read_text().replace('type = "float32"', 'type = "float33"', 1))
        proc.send_signal(signal.SIGHUP)
        mark = hub.delivered_count()
        assert await asyncio.to_thread(hub.wait_for, seen("dev2", mark), 20)  # old config kept
    finally:
        log = await stop_gatewayd(proc)
    assert proc.returncode == 0, log
    assert "reloaded devices=2 added=dev2 removed=-" in log
    assert "reload_refused" in log
    assert re.search(r"devices\[0\] \(dev1\)\.points\[0\] \(\w+\)\.type", log), log
    stats = read_stats(tmp_path / "q.db")
    assert stats.state["queued"] == stats.state["sent"] + stats.pending_samples  # queue untouched
