"""`gatewayd sim modbus` and `gatewayd sim hub` as an operator runs them: separate processes."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest

from gatewayd.sim.broker import free_port
from gatewayd.sim.hub import CONTROL_TOPIC
from gatewayd.sim.modbus import meter_points
from tests.support.brokers import Broker, wait_for_port
from tests.support.daemon import gateway_config, modbus_device, running

Process = asyncio.subprocess.Process


@pytest.fixture
async def spawn() -> AsyncIterator[Callable[..., Coroutine[Any, Any, Process]]]:
    started: list[Process] = []

    async def start(*args: str) -> Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gatewayd",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def line(stream: asyncio.StreamReader | None, timeout_s: float = 15.0) -> str:
    assert stream is not None
    async with asyncio.timeout(timeout_s):
        return (await stream.readline()).decode()


async def test_simulators_as_processes_serve_a_real_daemon(
    tmp_path: Path, broker: Broker, spawn: Callable[..., Coroutine[Any, Any, Process]]
) -> None:
    modbus_port = free_port()
    await spawn("sim", "modbus", "--port", str(modbus_port), "--units", "1,2")
    hub = await spawn("sim", "hub", "--port", str(broker.port), "--reply-code", "500")
    await asyncio.to_thread(wait_for_port, modbus_port)
    assert "hub simulator on" in await line(hub.stderr)

    devices = [modbus_device(f"m{u}", modbus_port, u, meter_points(), 0.2) for u in (1, 2)]
    settings = gateway_config(tmp_path, broker.port, devices, forward={"reply_timeout_s": 1})
    async with running(settings) as daemon:
        first = json.loads(await line(hub.stdout))
        assert first["code"] == 500 and first["method"] == "thing.measurepoint.post.batch"
        # Switch the hub to 200 from outside, as an operator would.
        await asyncio.to_thread(
            publish.single,
            CONTROL_TOPIC,
            json.dumps({"reply_code": 200}),
            qos=1,
            hostname="127.0.0.1",
            port=broker.port,
        )
        while (request := json.loads(await line(hub.stdout)))["code"] != 200:
            pass
        await daemon.forwarder.wait_inflight(5)
        assert daemon.forwarder.delivered >= request["samples"] > 0
        assert {p.device.name: p.polls > 0 for p in daemon.pollers} == {"m1": True, "m2": True}
