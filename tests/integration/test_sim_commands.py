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
from tests.support.brokers import FrontedBroker, wait_for_port
from tests.support.daemon import config_data, gateway_config, modbus_device, running, write_config
from tests.support.raw_gateway import RawGateway

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


async def stderr_until(proc: Process, text: str) -> str:
    """Read the process's stderr up to the line containing `text` (warnings come first)."""
    while text not in (got := await line(proc.stderr)):
        assert got, f"stderr ended before {text!r}"
    return got


async def event(proc: Process, kind: str) -> dict[str, Any]:
    """The next JSON line of `kind` on the hub's stdout (logins and topology come too)."""
    while (body := json.loads(await line(proc.stdout)))["kind"] != kind:
        pass
    return body


async def test_simulators_as_processes_serve_a_real_daemon(
    tmp_path: Path, broker: FrontedBroker, spawn: Callable[..., Coroutine[Any, Any, Process]]
) -> None:
    modbus_port, front = free_port(), free_port()
    await spawn("sim", "modbus", "--port", str(modbus_port), "--units", "1,2")
    hub = await spawn(
        "sim",
        "hub",
        "--port",
        str(broker.backend_port),
        "--listen",
        f"127.0.0.1:{front}",
        "--gateway-secret",
        "gw-secret",
        "--reply-code",
        "500",
    )
    await asyncio.to_thread(wait_for_port, modbus_port)
    assert f"127.0.0.1:{front} (logins checked)" in await stderr_until(hub, "hub simulator")

    devices = [modbus_device(f"m{u}", modbus_port, u, meter_points(), 0.2) for u in (1, 2)]
    settings = gateway_config(tmp_path, front, devices, forward={"reply_timeout_s": 1})
    async with running(settings) as daemon:
        login = await event(hub, "connect")
        assert login["accepted"] and login["device"] == "gwPK/gw001"
        assert (await event(hub, "thing.topo.get"))["code"] == 200
        first = await event(hub, "data")
        assert first["code"] == 500 and first["method"] == "thing.measurepoint.post.batch"
        # Switch the hub to 200 from outside, as an operator would.
        await asyncio.to_thread(
            publish.single,
            CONTROL_TOPIC,
            json.dumps({"reply_code": 200}),
            qos=1,
            hostname="127.0.0.1",
            port=broker.backend_port,
        )
        # m2's first poll is due half an interval after m1's; the retried sample can get its 200
        # before that, so wait for a 200 that comes after both meters have given a sample.
        async with asyncio.timeout(20):
            both_read = False
            while True:
                request = await event(hub, "data")
                if both_read and request["code"] == 200:
                    break
                both_read = all(p.successes > 0 for p in daemon.pollers)
        await daemon.forwarder.wait_inflight(5)
        assert daemon.forwarder.delivered >= request["samples"] > 0
        assert {p.device.name: p.failures for p in daemon.pollers} == {"m1": 0, "m2": 0}


async def test_sim_hub_refuses_a_wrong_gateway_secret_and_bad_control(
    tmp_path: Path, broker: FrontedBroker, spawn: Callable[..., Coroutine[Any, Any, Process]]
) -> None:
    front = free_port()
    model = tmp_path / "model.toml"
    model.write_text('[subPK]\nP = "float"\n')
    args = ("--port", str(broker.backend_port), "--listen", f"127.0.0.1:{front}")
    hub = await spawn("sim", "hub", *args, "--gateway-secret", "right", "--model", str(model))
    await stderr_until(hub, "hub simulator")
    wrong = RawGateway(front, "gwPK", "gw001", "wrong")
    try:
        assert await asyncio.to_thread(wrong.connect) == 5
    finally:
        wrong.close()
    login = await event(hub, "connect")
    assert login["code"] == 5 and not login["accepted"] and "sign" in login["reason"]
    await asyncio.to_thread(
        publish.single,
        CONTROL_TOPIC,
        '{"reply_code": "oops"}',
        hostname="127.0.0.1",
        port=broker.backend_port,
        qos=1,
    )
    refused = await event(hub, "control")
    assert refused["ok"] is False and "reply_code" in refused["error"]
    assert "hub_sim_control_refused" in await stderr_until(hub, "hub_sim_control_refused")


async def test_sim_hub_without_secret_or_model_says_so_loudly(
    broker: FrontedBroker, spawn: Callable[..., Coroutine[Any, Any, Process]]
) -> None:
    hub = await spawn("sim", "hub", "--port", str(broker.backend_port), "--listen", "127.0.0.1:0")
    warnings = [await line(hub.stderr), await line(hub.stderr)]
    assert "accepts ANY login" in warnings[0] and "any point id" in warnings[1]


async def test_sim_hub_with_a_config_knows_its_gateway_devices_and_model(
    tmp_path: Path, broker: FrontedBroker, spawn: Callable[..., Coroutine[Any, Any, Process]]
) -> None:
    modbus_port, front = free_port(), free_port()
    await spawn("sim", "modbus", "--port", str(modbus_port), "--units", "1")
    devices = [modbus_device("m1", modbus_port, 1, meter_points(), 0.2)]
    data = config_data(tmp_path, front, devices, gateway={"device_secret": "from-the-file"})
    config = write_config(tmp_path / "config.toml", data)
    args = ("--port", str(broker.backend_port), "--listen", f"127.0.0.1:{front}")
    hub = await spawn("sim", "hub", *args, "-c", str(config))
    await stderr_until(hub, "hub simulator")
    await asyncio.to_thread(wait_for_port, modbus_port)
    settings = gateway_config(tmp_path, front, devices, gateway={"device_secret": "from-the-file"})
    async with running(settings):
        assert (await event(hub, "connect"))["accepted"]
        assert (await event(hub, "thing.topo.add"))["added"] == ["subPK/m1"]
        assert (await event(hub, "combine.login.batch"))["logged"] == ["subPK/m1"]
        assert (await event(hub, "data"))["code"] == 200  # every meter point fits the model
