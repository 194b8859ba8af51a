"""A stage that crashes or hangs stops the daemon: exit 1, the watchdog unfed, the queue intact.

Each case runs `gatewayd run` as a child with NOTIFY_SOCKET on a socket this test owns and
WATCHDOG_USEC set, and injects the fault through the test-only hook GATEWAYD_TEST_FAULT
(gatewayd/runtime/faults.py). The fault fires once the watchdog was fed at least once.
A hung watchdog task is not in the list: nothing is left to notice it but systemd, which does
(no more WATCHDOG=1); the uplink's hang (paho's thread stuck) is not covered yet.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from gatewayd.queue.store import read_stats
from gatewayd.sim.broker import free_port
from gatewayd.sim.hub import HubSimulator
from tests.support.brokers import Broker
from tests.support.daemon import config_data, modbus_device, start_gatewayd, write_config
from tests.support.modbus import KNOWN_POINTS, KnownModbusServer

WATCHDOG_USEC = 8_000_000  # a stage silent for 4 s is stale, for 5 s stalled; pings every 2 s
WATCHDOG_S = WATCHDOG_USEC / 1_000_000
PING_S = 2.0


def logged_at(line: str) -> datetime:
    return datetime.fromisoformat(line.split(" ", 1)[0])


CASES = [
    (stage, kind)
    for stage in ("acquire", "queue-writer", "forwarder", "topology", "clock", "health", "metrics")
    for kind in ("crash", "hang")
] + [("uplink", "crash"), ("watchdog", "crash")]


class Notifications:
    """The notify socket, with the monotonic time each datagram arrived."""

    def __init__(self, path: Path) -> None:
        import socket

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.path = path
        self.received: list[tuple[float, str]] = []

    async def collect(
        self, proc: asyncio.subprocess.Process, timeout_s: float
    ) -> tuple[float, str]:
        """Read until the child exits (draining its log meanwhile); returns when, and the log."""
        loop = asyncio.get_running_loop()
        exited = asyncio.ensure_future(proc.communicate())
        async with asyncio.timeout(timeout_s):
            while not exited.done():
                recv = asyncio.ensure_future(loop.sock_recv(self.sock, 4096))
                await asyncio.wait({recv, exited}, return_when=asyncio.FIRST_COMPLETED)
                if recv.done():
                    self.received.append((time.monotonic(), recv.result().decode()))
                else:
                    recv.cancel()
        gone = time.monotonic()
        while True:  # what was sent before the exit and not read yet
            try:
                self.received.append((gone, self.sock.recv(4096).decode()))
            except BlockingIOError:
                return gone, exited.result()[1].decode()

    def times(self, key: str) -> list[float]:
        return [at for at, text in self.received if key in text]

    def close(self) -> None:
        self.sock.close()


def fault_config(tmp_path: Path, broker: Broker, modbus_port: int) -> Path:
    devices = [modbus_device("dev1", modbus_port, 1, KNOWN_POINTS, 0.2)]
    data = config_data(
        tmp_path,
        broker.port,
        devices,
        queue={"path": str(tmp_path / "q.db")},
        metrics={"listen": f"127.0.0.1:{free_port()}"},
    )
    return write_config(tmp_path / "config.toml", data)


@pytest.mark.parametrize(("stage", "kind"), CASES)
async def test_a_stage_that_crashes_or_hangs_stops_the_daemon(
    stage: str,
    kind: str,
    tmp_path: Path,
    broker: Broker,
    hub: HubSimulator,
    known_modbus: KnownModbusServer,
) -> None:
    hub.register("subPK", "dev1", "secret-of-dev1")
    config = fault_config(tmp_path, broker, known_modbus.port)
    notify = Notifications(tmp_path / "notify.sock")
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "GATEWAYD_TEST_FAULT": f"{stage}:{kind}",
    }
    proc = await start_gatewayd("run", "-c", str(config), env=env)
    try:
        exited_at, log = await notify.collect(proc, timeout_s=40)
    finally:
        notify.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1, log
    pings = notify.times("WATCHDOG=1")
    assert pings, log
    fired = [line for line in log.splitlines() if "test_fault_injected" in line]
    assert len(fired) == 1, log
    reason = "stage_failed" if kind == "crash" else "stage_stalled"
    critical = [line for line in log.splitlines() if "level=critical" in line]
    assert len(critical) == 1 and f"{reason} stage={stage}" in critical[0], log
    # It gave up within the watchdog interval, before systemd would have killed it.
    took = (logged_at(critical[0]) - logged_at(fired[0])).total_seconds()
    assert took <= WATCHDOG_S, log
    assert "Traceback" not in log
    if kind == "hang":
        # Alive but unfed: no ping for longer than the ping period before it gave up.
        assert exited_at - pings[-1] >= PING_S, (pings, exited_at)
    stopping = notify.times("STOPPING=1")
    assert stopping and all(at < stopping[0] for at in pings)
    # The queue was closed cleanly: every committed reading is accounted for.
    assert "stopped pending=" in log
    stats = read_stats(tmp_path / "q.db")
    assert stats.state["queued"] == stats.state["sent"] + stats.pending_samples
    assert stats.state["queued"] > 0
