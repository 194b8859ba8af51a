"""Run the daemon in the test's event loop, with a bounded start and stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gatewayd.config import Settings, build_config
from gatewayd.daemon import Daemon
from gatewayd.sim.hub import HubSimulator


def gateway_config(
    tmp_path: Path, mqtt_port: int, devices: list[dict[str, Any]], **sections: dict[str, Any]
) -> Settings:
    """A fast-cycling config for tests; sections override defaults key by key."""
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
    return build_config(data)


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
    """Create the config's sub-devices on the hub, as an operator does in the console."""
    for device in settings.devices:
        assert device.device_secret is not None
        hub.register(device.product_key, device.device_key, device.device_secret.get_secret_value())


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
