"""`gatewayd demo` and `gatewayd sim …`: the show and the simulators, to try without hardware."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import click

from gatewayd.cli_common import (
    config_failure,
    config_option,
    console,
    err_console,
    load_or_exit,
)
from gatewayd.errors import ConfigError
from gatewayd.logs import setup_logging


@click.command()
@click.option("--outage-s", default=10.0, show_default=True, help="How long the uplink is cut.")
def demo(outage_s: float) -> None:
    """A self-contained show: simulated meters, an embedded broker, the hub simulator, an outage.

    Needs no config and no network; ends by itself in under a minute (Ctrl+C ends it early).
    """
    from gatewayd.sim.demo import run_demo

    setup_logging("WARNING")
    try:
        code = asyncio.run(run_demo(console(), outage_s=outage_s))
    except KeyboardInterrupt:
        err_console().print("interrupted: everything was stopped and the temporary queue removed")
        code = 130
    except ConfigError as exc:  # the environment is laid over the demo's config too
        config_failure(exc)
    sys.exit(code)


@click.group()
def sim() -> None:
    """Run a simulator on its own, to try a config without hardware or cloud."""


@sim.command("modbus")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5020, show_default=True)
@click.option("--units", default="1", show_default=True, help="Comma-separated unit ids.")
def sim_modbus(host: str, port: int, units: str) -> None:
    """Serve simulated energy meters over Modbus TCP, one per unit id, with these points:

    Holding 0-1 float32 Power, 2 uint16 Voltage (x0.1), 3 int16 Temperature (x0.1),
    4-5 uint32 Energy (ABCD), 6 uint16 Seq, 8 alarm word (bit 3), 10-13 string Serial;
    input 0-1 float32 Frequency; coils and discrete inputs 0-15 (coil 0 Breaker).
    Any other address is refused with exception 02 (illegal data address), as a real
    meter does. config.example.toml reads these points once its host and port are this
    simulator's (host = "127.0.0.1", port = 5020 by default).
    """
    from gatewayd.sim.modbus import ModbusSimulator

    unit_ids = [int(u) for u in units.split(",") if u.strip()]
    setup_logging("INFO")

    async def serve() -> None:
        simulator = ModbusSimulator(unit_ids, host, port)
        bound = await simulator.start()
        err_console().print(f"modbus simulator on {host}:{bound} units {unit_ids}")
        try:
            await asyncio.Event().wait()
        finally:
            await simulator.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


@sim.command("hub")
@click.option("--host", default="127.0.0.1", show_default=True, help="MQTT broker host.")
@click.option("--port", default=1883, show_default=True, help="MQTT broker port.")
@click.option(
    "--listen",
    default="127.0.0.1:11883",
    show_default=True,
    help="HOST:PORT where gateways connect (the authenticating front; port 0: any free one).",
)
@click.option("--gateway-secret", help="Secret gateways must sign with (default: from -c).")
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Thing model (TOML or JSON) to check points against (default: derived from -c).",
)
@click.option("--reply-code", default=200, show_default=True, help="Answer data requests so.")
@config_option
def sim_hub(
    host: str,
    port: int,
    listen: str,
    gateway_secret: str | None,
    model_path: Path | None,
    reply_code: int,
    config: str | None,
) -> None:
    """Play the EnOS hub on a broker: logins, topology, data requests; print each as JSON.

    Gateways connect to --listen; their CONNECT is checked (secure mode 2 sign with the gateway
    secret; CONNACK 5 "not authorised" otherwise) and relayed to the broker. With -c, the
    config's gateway, sub-devices (which must log in, 1212 otherwise) and a model derived from
    its points are known, as on the real hub. Without them it says what it leaves unchecked.
    """
    from gatewayd.sim.hub_cli import build_hub, parse_listen, serve

    where = parse_listen(listen)
    settings = load_or_exit(config) if config else None
    setup_logging("INFO")
    hub = build_hub(host, port, settings, gateway_secret, model_path, err_console())
    hub.set_faults(reply_code=reply_code)
    serve(hub, where, err_console())
