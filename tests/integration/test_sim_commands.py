"""`gatewayd sim modbus` and `gatewayd sim hub` as an operator runs them: separate processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.publish as publish
import pytest

from gatewayd.sim.broker import free_port
from gatewayd.sim.hub import CONTROL_TOPIC
from gatewayd.sim.modbus import meter_points
from tests.support.brokers import Broker, wait_for_port
from tests.support.daemon import gateway_config, modbus_device, running


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()


def gatewayd(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gatewayd", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_simulators_as_processes_serve_a_real_daemon(
    tmp_path: Path, broker: Broker, procs: list[subprocess.Popen[str]]
) -> None:
    modbus_port = free_port()
    procs.append(gatewayd("sim", "modbus", "--port", str(modbus_port), "--units", "1,2"))
    hub = gatewayd("sim", "hub", "--port", str(broker.port), "--reply-code", "500")
    procs.append(hub)
    await asyncio.to_thread(wait_for_port, modbus_port)
    assert hub.stderr is not None and "hub simulator on" in await asyncio.to_thread(
        hub.stderr.readline
    )

    devices = [modbus_device(f"m{u}", modbus_port, u, meter_points(), 0.2) for u in (1, 2)]
    settings = gateway_config(tmp_path, broker.port, devices, forward={"reply_timeout_s": 1})
    assert hub.stdout is not None
    async with running(settings) as daemon:
        first = json.loads(await asyncio.to_thread(hub.stdout.readline))
        assert first["code"] == 500 and first["method"] == "thing.measurepoint.resume.batch"
        # Switch the hub to 200 from outside, as an operator would.
        await asyncio.to_thread(
            publish.single,
            CONTROL_TOPIC,
            json.dumps({"reply_code": 200}),
            qos=1,
            hostname="127.0.0.1",
            port=broker.port,
        )
        while True:
            line = json.loads(await asyncio.to_thread(hub.stdout.readline))
            if line["code"] == 200:
                break
        await daemon.forwarder.wait_inflight(5)
        assert daemon.forwarder.delivered >= line["samples"] > 0
        # The meters' sequence register counts reads: the two units were polled independently.
        assert {p.device.name: p.polls > 0 for p in daemon.pollers} == {"m1": True, "m2": True}
