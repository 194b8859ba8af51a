"""`gatewayd demo`: the whole product on one machine in under a minute.

Three simulated meters, an embedded MQTT broker, the hub simulator (strict: it checks the
gateway's login at its front and every point against the model the demo's config implies), and
the real daemon whose uplink runs through a relay. The relay is cut for a while: polling goes on, the queue grows, and
when the link returns the backlog drains to zero. At the end every reading is checked off at the
hub by its per-meter sequence number.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from gatewayd.config import Settings, build_config
from gatewayd.config_env import overruled
from gatewayd.queue.store import read_stats
from gatewayd.runtime.daemon import Daemon
from gatewayd.sim.broker import EmbeddedBroker
from gatewayd.sim.front import AuthFront
from gatewayd.sim.hub import HubSimulator
from gatewayd.sim.modbus import ModbusSimulator, meter_points
from gatewayd.sim.relay import Relay
from gatewayd.sim.thing_model import model_from_settings

UNITS = (1, 2, 3)
BEFORE_OUTAGE_S = 6.0
DRAIN_LIMIT_S = 30.0


def demo_config(queue_path: Path, mqtt_port: int, modbus_port: int) -> dict[str, Any]:
    return {
        "gateway": {"product_key": "demoGw", "device_key": "gw001", "device_secret": "demo-secret"},
        "mqtt": {
            "host": "127.0.0.1",
            "port": mqtt_port,
            "reconnect_min_s": 1,
            "reconnect_max_s": 2,
        },
        "queue": {"path": str(queue_path), "commit_interval_ms": 100},
        "forward": {
            # Readings older than 3 s at the reconnect go as backfill (resume), to show both.
            "live_max_age_s": 3,
            "reply_timeout_s": 3,
            "retry_min_s": 0.5,
            "retry_max_s": 2,
            "batch_max_samples": 50,
        },
        "devices": [
            {
                "name": f"meter-{unit}",
                "product_key": "demoMeter",
                "device_key": f"meter{unit:03d}",
                "device_secret": f"demo-meter-secret-{unit}",
                "interval_s": 0.5,
                "modbus": {
                    "transport": "tcp",
                    "host": "127.0.0.1",
                    "port": modbus_port,
                    "unit_id": unit,
                    "timeout_s": 0.4,
                    "retries": 0,
                },
                "points": meter_points(),
            }
            for unit in UNITS
        ],
    }


async def run_demo(console: Console, outage_s: float = 10.0) -> int:
    """Run the show; returns 0 when every reading reached the hub, 1 otherwise."""
    with tempfile.TemporaryDirectory(prefix="gatewayd-demo-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            broker = EmbeddedBroker()
            await broker.start()
            stack.push_async_callback(broker.stop)
            modbus = ModbusSimulator(UNITS)
            modbus_port = await modbus.start()
            stack.push_async_callback(modbus.stop)
            hub = HubSimulator("127.0.0.1", broker.port)
            await asyncio.to_thread(hub.start)
            stack.callback(hub.stop)
            front = AuthFront("127.0.0.1", broker.port, hub.check_login)
            await front.start()
            stack.push_async_callback(front.stop)
            relay = Relay("127.0.0.1", front.port)
            await relay.start()
            stack.push_async_callback(relay.stop)

            queue_path = Path(tmp) / "queue.db"
            data = demo_config(queue_path, relay.port, modbus_port)
            for name in overruled(Settings, data):
                console.print(f"warning: the demo sets this key itself; {name} is not used")
            settings = build_config(data)
            gateway = settings.gateway  # created "in the cloud console", with its model
            hub.register_gateway(gateway.product_key, gateway.device_key, gateway.secret())
            hub.set_models(model_from_settings(settings))
            for device in settings.devices:
                assert device.device_secret is not None
                hub.register(
                    device.product_key, device.device_key, device.device_secret.get_secret_value()
                )
            daemon = Daemon(settings, shutdown_timeout_s=3)
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))

            console.rule("[bold]gatewayd demo")
            console.print(
                f"3 simulated meters on modbus 127.0.0.1:{modbus_port}, broker on "
                f"127.0.0.1:{broker.port}, queue {queue_path}",
                highlight=False,
            )
            console.print(f"uplink is cut after {BEFORE_OUTAGE_S:g}s for {outage_s:g}s\n")
            try:
                await _show(console, daemon, relay, hub, queue_path, outage_s)
            finally:
                stop.set()
                await task
            return _verdict(console, hub, queue_path)


async def _show(
    console: Console,
    daemon: Daemon,
    relay: Relay,
    hub: HubSimulator,
    queue_path: Path,
    outage_s: float,
) -> None:
    start = time.monotonic()
    phase = "online"
    while True:
        await asyncio.sleep(1.0)
        elapsed = time.monotonic() - start
        if phase == "online" and elapsed >= BEFORE_OUTAGE_S:
            relay.cut()
            phase = "OUTAGE"
            console.print("[bold red]-- uplink cut --[/]")
        elif phase == "OUTAGE" and elapsed >= BEFORE_OUTAGE_S + outage_s:
            relay.restore()
            phase = "draining"
            restored = elapsed
            console.print("[bold green]-- uplink restored --[/]")
        stats = await asyncio.to_thread(read_stats, queue_path)
        pending = stats.pending_samples
        link = "up" if daemon.session.connected.is_set() else "down"
        bar = "█" * min(pending // 3, 24)
        console.print(
            f"t={elapsed:5.1f}s  {phase:<8} uplink={link:<4} polled={stats.state.get('polled', 0):>4}"
            f"  queued={pending:>4}  at hub={hub.delivered_count():>4}  [yellow]{bar}[/]",
            highlight=False,
        )
        if phase == "draining" and pending == 0:
            return
        if phase == "draining" and elapsed - restored > DRAIN_LIMIT_S:
            console.print("[red]the backlog did not drain in time[/]")
            return


def _verdict(console: Console, hub: HubSimulator, queue_path: Path) -> int:
    stats = read_stats(queue_path)
    committed = int(stats.state.get("queued", 0))
    unique = {(d.device_key, d.points.get("Seq"), d.ts_ms) for d in hub.deliveries}
    duplicates = len(hub.deliveries) - len(unique)
    console.print()
    console.rule("[bold]result")
    console.print(f"samples committed to the queue: {committed}", highlight=False)
    console.print(
        f"distinct samples at the hub:    {len(unique)} (re-sent duplicates: {duplicates})",
        highlight=False,
    )
    live = sum(1 for d in hub.deliveries if d.method == "thing.measurepoint.post.batch")
    console.print(f"  sent live (post.batch):       {live}", highlight=False)
    console.print(f"  backfilled (resume.batch):    {len(hub.deliveries) - live}", highlight=False)
    console.print(f"still queued (sent at next start): {stats.pending_samples}", highlight=False)
    lost = committed - len(unique) - stats.pending_samples
    if lost == 0:
        console.print(
            "[bold green]no reading lost[/]: every committed sample is at the hub or queued"
        )
        return 0
    console.print(f"[bold red]{lost} readings unaccounted for[/]")
    return 1
