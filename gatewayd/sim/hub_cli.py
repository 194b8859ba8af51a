"""`gatewayd sim hub`: the hub simulator and its authenticating front as one process.

Gateways connect to the front (`--listen`, by default the hub's plain port 11883); the front
checks each CONNECT and relays accepted sessions to the broker (`--host`/`--port`) on which the
simulator answers requests. Every login, topology request, sub-device login, data request and
control message is printed as one JSON line on stdout.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from gatewayd.config import Settings
from gatewayd.sim.front import AuthFront, ThreadedFront
from gatewayd.sim.hub import CONTROL_TOPIC, HubSimulator
from gatewayd.sim.login import ANY_DEVICE
from gatewayd.sim.thing_model import ThingModel, load_model, model_from_settings


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (port 0: the OS picks one); click.BadParameter otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{text!r} is not HOST:PORT")
    return host, int(port)


def build_hub(
    host: str,
    port: int,
    settings: Settings | None,
    gateway_secret: str | None,
    model_path: Path | None,
    console: Console,
) -> HubSimulator:
    """A hub that knows what the operator told it, and says loudly what it does not check."""
    model: ThingModel | None = None
    if model_path is not None:
        try:
            model = load_model(model_path)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--model") from None
    elif settings is not None:
        model = model_from_settings(settings)
    hub = HubSimulator(host, port, require_login=settings is not None, model=model)
    if settings is not None:
        gw = settings.gateway
        hub.register_gateway(gw.product_key, gw.device_key, gateway_secret or gw.secret())
        for device in settings.devices:
            if device.device_secret is not None:
                secret = device.device_secret.get_secret_value()
                hub.register(device.product_key, device.device_key, secret)
    elif gateway_secret is not None:
        hub.register_gateway(*ANY_DEVICE, gateway_secret)
    if hub.gateway_secrets is None:
        console.print(
            "[bold yellow]WARNING[/] no gateway secret (-c or --gateway-secret): the front "
            "accepts ANY login unchecked; the real hub would refuse a wrong one",
            highlight=False,
            soft_wrap=True,
        )
    if not hub.models:
        console.print(
            "[bold yellow]WARNING[/] no thing model (-c or --model): any point id and any "
            "value type is accepted; the real hub answers 1204 for what its model lacks",
            highlight=False,
            soft_wrap=True,
        )
    return hub


def serve(hub: HubSimulator, listen: tuple[str, int], console: Console) -> None:
    """Run until SIGTERM or Ctrl+C, printing every event as a JSON line."""
    lock = threading.Lock()

    def show(event: dict[str, Any]) -> None:
        with lock:
            click.echo(json.dumps(event, default=str))

    hub.on_event = show
    front = ThreadedFront(AuthFront(hub.host, hub.port, hub.check_login, *listen))
    hub.start()
    try:
        bound = front.start()
        console.print(
            f"hub simulator: gateways connect to {listen[0]}:{bound} (logins checked), "
            f"broker {hub.host}:{hub.port}; control topic {CONTROL_TOPIC}",
            highlight=False,
            soft_wrap=True,
        )
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        try:
            while not stopped.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        front.close()
        hub.stop()
