"""The `gatewayd` command line. Each command is a thin wrapper over a library call.

Exit codes: 0 ok, 1 runtime failure, 2 usage, 78 configuration error (EX_CONFIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import click

from gatewayd import __version__
from gatewayd.cli_common import (
    config_option,
    config_path,
    console,
    err_console,
    fail,
    fmt_ms,
    load_or_exit,
)
from gatewayd.cli_queue import queue
from gatewayd.cli_sim import demo, sim
from gatewayd.config import load_config
from gatewayd.early import hold_collections, hold_reloads, resume_collections
from gatewayd.errors import GatewaydError
from gatewayd.logs import setup_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gatewayd")
@click.pass_context
def main(ctx: click.Context) -> None:
    """gatewayd: poll Modbus devices, queue every reading in SQLite, forward it to an EnOS hub."""
    if ctx.invoked_subcommand != "run":  # only `run` holds collections until it is READY
        resume_collections()


main.add_command(queue)
main.add_command(demo)
main.add_command(sim)


@main.command()
@config_option
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def run(config: str | None, log_level: str) -> None:
    """Run the daemon until SIGTERM or SIGINT (one daemon per queue file).

    Exits 1 if a stage fails or stalls, or if another gatewayd already runs on the same queue.

    Example: gatewayd run -c /etc/gatewayd/config.toml
    """
    hold_reloads()  # the console script comes here without gatewayd/__main__.py
    hold_collections()  # until READY (gatewayd/early.py)
    settings = load_or_exit(config)
    setup_logging(log_level.upper())
    from gatewayd.runtime.daemon import Daemon
    from gatewayd.runtime.signals import run_until_signal

    try:
        path = config_path(config)
        asyncio.run(run_until_signal(Daemon(settings, loader=lambda: load_config(path))))
    except GatewaydError as exc:
        fail(str(exc))
    except Exception as exc:  # a bug: one line for the operator, not a traceback
        fail(f"unexpected {type(exc).__name__}: {exc}")


@main.command()
@config_option
def check(config: str | None) -> None:
    """Validate the config and show devices, points and the reads they coalesce into.

    Exits 0 when valid, 78 with every problem named by its key path when not.
    """
    settings = load_or_exit(config)
    from gatewayd.access import service_user_problem
    from gatewayd.acquire.plan import plan_reads

    # Run as root, check reads anything; the service runs as its own user and may not.
    unreachable = service_user_problem(config_path(config))
    if unreachable:
        err_console().print(f"[bold yellow]warning:[/] {unreachable}", highlight=False)

    gw = settings.gateway
    console().print(
        f"gateway {gw.product_key}/{gw.device_key} → {settings.mqtt.host}:"
        f"{settings.mqtt.port}{' (TLS)' if settings.mqtt.tls else ''}",
        highlight=False,
    )
    console().print(f"queue {settings.queue.path}", highlight=False)
    for device in settings.devices:
        m = device.modbus
        where = m.serial_port if m.transport == "rtu" else f"{m.host}:{m.port}"
        click.echo(
            f"\n{device.name} ({device.product_key}/{device.device_key}) "
            f"{m.transport} {where} unit {m.unit_id} every {device.interval_s:g}s"
        )
        # Plain aligned text, not a rich table: a fleet of 1,000 devices prints in a second.
        click.echo("  read │ table    │ address │ count │ points")
        for n, request in enumerate(plan_reads(device.points, m.max_gap), 1):
            names = ", ".join(f"{p.point.id}:{p.point.type}" for p in request.points)
            click.echo(
                f"  {n:>4} │ {request.table:<8} │ {request.address:>7} │ {request.count:>5} │ {names}"
            )
    devices, points = len(settings.devices), sum(len(d.points) for d in settings.devices)
    console().print(f"[green]ok[/]: {_plural(devices, 'device')}, {_plural(points, 'point')}")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


@main.command()
@config_option
@click.option("--device", "device_name", metavar="NAME", help="Poll only this device.")
def poll(config: str | None, device_name: str | None) -> None:
    """Poll each device once and print the decoded points (for commissioning).

    Every read the device refused is listed with its Modbus exception (e.g. `02 illegal data
    address`: the address is not mapped, or the unit id is wrong), and every point that could
    not be read with the reason. Exits 1 if any device fails or any configured point is missing.
    """
    settings = load_or_exit(config)
    devices = [d for d in settings.devices if device_name in (None, d.name)]
    if device_name and not devices:
        known = ", ".join(d.name for d in settings.devices) or "none"
        fail(f"no device named {device_name!r} (configured: {known})", 2)  # a usage error
    if not devices:
        fail("no devices configured")
    with quiet_logs():  # what went wrong is printed per device and point below
        problems = asyncio.run(_poll_once(devices))
    if problems:
        sys.exit(1)


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """For `poll`: no log lines beside the printed results (pymodbus's none at all); the
    levels are put back after, so a caller in the same process keeps its logging."""
    quiet = {"pymodbus": logging.CRITICAL + 1, "gatewayd": logging.ERROR}
    saved = {name: logging.getLogger(name).level for name in quiet}
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def _poll_once(devices: list[Any]) -> int:
    """Poll each device once; the number of failed devices plus points that could not be read."""
    from rich.table import Table

    from gatewayd.acquire.poller import build_pollers
    from gatewayd.errors import DeviceError

    pollers, endpoints = build_pollers(devices, lambda sample: None)
    problems = 0
    try:
        for poller in pollers:
            try:
                sample = await poller.read_sample()
            except DeviceError as exc:
                problems += 1
                err_console().print(f"[red]{poller.device.name}[/]: {exc.reason}", highlight=False)
                continue
            if sample.points:  # a device whose every read was refused has no table to show
                table = Table(title=f"{poller.device.name} at {fmt_ms(sample.ts_ms)}")
                table.add_column("point")
                table.add_column("value")
                for point_id, value in sample.points.items():
                    table.add_row(point_id, json.dumps(value))
                console().print(table)
            for point_id, why in poller.unread.items():
                problems += 1
                err_console().print(
                    f"[red]{poller.device.name}.{point_id}[/]: not read: {why}", highlight=False
                )
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    return problems
