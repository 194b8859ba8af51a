"""Run the daemon in the test's event loop, with a bounded start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gatewayd.config import Settings, build_config, load_config
from gatewayd.runtime.daemon import Daemon
from gatewayd.sim.hub import HubSimulator
from gatewayd.sim.thing_model import model_from_settings


def config_data(
    tmp_path: Path, mqtt_port: int, devices: list[dict[str, Any]], **sections: dict[str, Any]
) -> dict[str, Any]:
    """A fast-cycling config for tests, as a dict; sections override defaults key by key."""
    data: dict[str, Any] = {
        "gateway": {"product_key": "gwPK", "device_key": "gw001", "device_secret": "gw-secret"},
        "mqtt": {
            "host": "127.0.0.1",
            "port": mqtt_port,
            "reconnect_min_s": 1,
            "reconnect_max_s": 1,
        },
        "queue": {"path": str(tmp_path / "queue.db"), "commit_interval_ms": 50},
        "forward": {"reply_timeout_s": 2, "retry_min_s": 0.2, "retry_max_s": 0.5},
        "devices": devices,
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return data


def gateway_config(
    tmp_path: Path, mqtt_port: int, devices: list[dict[str, Any]], **sections: dict[str, Any]
) -> Settings:
    """The same config, validated, for a daemon run in the test's event loop."""
    return build_config(config_data(tmp_path, mqtt_port, devices, **sections))


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write a config dict as the TOML file an operator would, for `gatewayd run -c`."""
    lines: list[str] = []
    for section, values in data.items():
        if section == "devices":
            continue
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    for device in data.get("devices", []):
        lines.append("[[devices]]")
        lines += [
            f"{k} = {json.dumps(v)}" for k, v in device.items() if k not in ("modbus", "points")
        ]
        lines.append("[devices.modbus]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in device["modbus"].items()]
        for point in device["points"]:
            lines.append("[[devices.points]]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in point.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def modbus_device(
    name: str, port: int, unit_id: int, points: list[dict[str, Any]], interval_s: float = 0.2
) -> dict[str, Any]:
    return {
        "name": name,
        "product_key": "subPK",
        "device_key": name,
        "device_secret": f"secret-of-{name}",
        "interval_s": interval_s,
        "modbus": {
            "transport": "tcp",
            "host": "127.0.0.1",
            "port": port,
            "unit_id": unit_id,
            "timeout_s": min(0.5, interval_s),
            "retries": 0,
        },
        "points": points,
    }


def register(hub: HubSimulator, settings: Settings) -> None:
    """Create the config's gateway, sub-devices and their products' models on the hub, as an
    operator does in the console (the hub then checks the gateway's login and every point)."""
    gateway = settings.gateway
    hub.register_gateway(gateway.product_key, gateway.device_key, gateway.secret())
    hub.set_models(model_from_settings(settings))
    for device in settings.devices:
        assert device.device_secret is not None
        hub.register(device.product_key, device.device_key, device.device_secret.get_secret_value())


def register_file(hub: HubSimulator, config: Path) -> None:
    """`register` for a config file, as `gatewayd run -c` reads it."""
    register(hub, load_config(config))


@contextlib.asynccontextmanager
async def running(
    settings: Settings, hub: HubSimulator | None = None, timeout_s: float = 10.0
) -> AsyncIterator[Daemon]:
    """Run the daemon (registering its sub-devices with `hub` first) until the block ends."""
    if hub is not None:
        register(hub, settings)
    daemon = Daemon(settings, shutdown_timeout_s=2.0)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        async with asyncio.timeout(timeout_s):
            started = asyncio.create_task(daemon.started.wait())
            await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # raise what stopped it
        yield daemon
    finally:
        stop.set()
        async with asyncio.timeout(timeout_s):
            await task


async def start_gatewayd(
    *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`python -m gatewayd ARGS` as a child whose stderr (the log) the test reads."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatewayd", *args, env=env, stderr=asyncio.subprocess.PIPE
    )


async def stop_gatewayd(proc: asyncio.subprocess.Process, timeout_s: float = 20) -> str:
    """SIGTERM, wait (bounded), kill if it did not stop; returns the child's log."""
    try:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout_s):
            _, err = await proc.communicate()
        return err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
