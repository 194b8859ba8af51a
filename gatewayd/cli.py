"""The `gatewayd` command line. Each command is a thin wrapper over a library call.

Exit codes: 0 ok, 1 runtime failure, 2 usage, 78 configuration error (EX_CONFIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from gatewayd import __version__
from gatewayd.config import DEFAULT_CONFIG_PATH, Settings, load_config
from gatewayd.early import hold_reloads
from gatewayd.errors import ConfigError, GatewaydError
from gatewayd.logs import setup_logging

EX_CONFIG = 78

console = Console()
err_console = Console(stderr=True)


def config_path(path: str | None) -> Path:
    """`-c`, else $GATEWAYD_CONFIG, else the system default."""
    return Path(path or os.environ.get("GATEWAYD_CONFIG") or DEFAULT_CONFIG_PATH)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def load_or_exit(path: str | None) -> Settings:
    try:
        return load_config(config_path(path))
    except ConfigError as exc:
        err_console.print(f"[bold red]invalid configuration[/] {exc.source}", highlight=False)
        for problem in exc.problems:
            err_console.print(f"  {problem}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(EX_CONFIG)


config_option = click.option(
    "-c",
    "--config",
    "config",
    metavar="PATH",
    help="Config file (default: $GATEWAYD_CONFIG, else /etc/gatewayd/config.toml).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gatewayd")
def main() -> None:
    """gatewayd: poll Modbus devices, queue every reading in SQLite, forward it to an EnOS hub."""


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
        err_console.print(f"[bold yellow]warning:[/] {unreachable}", highlight=False)

    gw = settings.gateway
    console.print(
        f"gateway {gw.product_key}/{gw.device_key} → {settings.mqtt.host}:"
        f"{settings.mqtt.port}{' (TLS)' if settings.mqtt.tls else ''}",
        highlight=False,
    )
    console.print(f"queue {settings.queue.path}", highlight=False)
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
    console.print(f"[green]ok[/]: {_plural(devices, 'device')}, {_plural(points, 'point')}")


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
                err_console.print(f"[red]{poller.device.name}[/]: {exc.reason}", highlight=False)
                continue
            if sample.points:  # a device whose every read was refused has no table to show
                table = Table(title=f"{poller.device.name} at {_fmt_ms(sample.ts_ms)}")
                table.add_column("point")
                table.add_column("value")
                for point_id, value in sample.points.items():
                    table.add_row(point_id, json.dumps(value))
                console.print(table)
            for point_id, why in poller.unread.items():
                problems += 1
                err_console.print(
                    f"[red]{poller.device.name}.{point_id}[/]: not read: {why}", highlight=False
                )
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    return problems


def _fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@main.group()
def queue() -> None:
    """Inspect and manage the queue file (works while the daemon runs)."""


def queue_path(config: str | None, db: str | None) -> Path:
    if db:
        return Path(db)
    return Path(load_or_exit(config).queue.path)


@queue.command()
@config_option
@click.option("--db", metavar="PATH", help="Queue file (instead of reading the config).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats(config: str | None, db: str | None, as_json: bool) -> None:
    """Pending samples and points, oldest and newest sample, file size, counters.

    Example: gatewayd queue stats --db /var/lib/gatewayd/queue.db
    """
    from gatewayd.queue.store import read_stats

    try:
        figures = read_stats(queue_path(config, db))
    except GatewaydError as exc:
        fail(str(exc))
    if figures.unreadable:
        click.echo(
            "warning: the file is damaged; unreadable: "
            + "; ".join(figures.unreadable)
            + f" ({figures.unreadable_samples:,} sample ids). Figures count what was read.",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(asdict(figures), sort_keys=True))
        return
    table = Table(title=f"queue {figures.path}", show_header=False)
    rows = [
        ("pending samples", f"{figures.pending_samples:,}"),
        ("pending points", f"{figures.pending_points:,}"),
        ("oldest sample", _fmt_ms(figures.oldest_ts_ms)),
        ("newest sample", _fmt_ms(figures.newest_ts_ms)),
        ("file size", f"{figures.file_bytes:,} B"),
        ("rejected (dead letter)", f"{figures.rejected:,}"),
    ]
    rows += [_state_row(key, value) for key, value in sorted(figures.state.items())]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def _state_row(key: str, value: Any) -> tuple[str, str]:
    """A `state` entry for people: times (`*_ms`) in ISO 8601 like the sample times above."""
    if key.endswith("_ms") and isinstance(value, int) and not isinstance(value, bool):
        return key.removesuffix("_ms").replace("_", " "), _fmt_ms(value or None)
    return key.replace("_", " "), str(value)


def queue_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """-c/--db to find the file, --json for machines: shared by every queue command."""
    fn = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)
    fn = click.option("--db", metavar="PATH", help="Queue file (instead of the config's).")(fn)
    return config_option(fn)


def parse_time(value: str | None) -> int | None:
    """Epoch milliseconds, or an ISO 8601 time (UTC unless it says otherwise)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither epoch ms nor an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def show_samples(
    rows: list[dict[str, Any]], as_json: bool, title: str, extra: tuple[str, ...] = ()
) -> None:
    if as_json:
        click.echo(json.dumps(rows))
        return
    # One line per sample, never cut: on a narrow terminal a line wraps as a whole instead of
    # a table truncating the device and the time to fit its columns.
    click.echo(f"{title}:")
    names = ("id", "device", "time", *extra, "points")
    lines = [names]
    for row in rows:
        lines.append(
            (
                str(row["id"]),
                f"{row['product_key']}/{row['device_key']}",
                _fmt_ms(row["ts_ms"]),
                *(str(row[key]) for key in extra),
                json.dumps(row["points"]),
            )
        )
    widths = [max(len(line[n]) for line in lines) for n in range(len(names) - 1)]
    for line in lines:
        click.echo(
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False))
            + "  "
            + line[-1]
        )


def admin(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except GatewaydError as exc:
        fail(str(exc))


@queue.command()
@queue_options
@click.option("-n", "count", default=10, show_default=True, help="How many.")
def peek(config: str | None, db: str | None, as_json: bool, count: int) -> None:
    """The oldest pending samples, in the order they will be sent.

    Example: gatewayd queue peek -n 5 --db /var/lib/gatewayd/queue.db
    """
    from gatewayd.queue import admin as queue_admin

    rows = admin(queue_admin.peek, queue_path(config, db), count)
    show_samples(rows, as_json, "oldest pending samples", ("attempts",))


@queue.command("rejected")
@queue_options
@click.option("-n", "count", default=20, show_default=True, help="How many.")
@click.option("--code", type=int, help="Only samples the hub refused with this code.")
def rejected_cmd(
    config: str | None, db: str | None, as_json: bool, count: int, code: int | None
) -> None:
    """Dead-lettered samples with the hub's code and message, newest first."""
    from gatewayd.queue import admin as queue_admin

    rows = admin(queue_admin.rejected, queue_path(config, db), count, code)
    show_samples(rows, as_json, "rejected samples", ("code", "message"))


@queue.command("requeue-rejected")
@queue_options
@click.option("--code", type=int, help="Only samples refused with this code.")
def requeue_rejected(config: str | None, db: str | None, as_json: bool, code: int | None) -> None:
    """Move dead-lettered samples back into the queue (after the model was fixed in the cloud).

    Example: gatewayd queue requeue-rejected --code 1204
    """
    from gatewayd.queue import admin as queue_admin

    moved = admin(queue_admin.requeue_rejected, queue_path(config, db), code)
    click.echo(json.dumps({"requeued": moved}) if as_json else f"requeued {moved} samples")


@queue.command()
@config_option
@click.option("--db", metavar="PATH", help="Queue file (instead of the config's).")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option("--device", metavar="DEVICE_KEY", help="Only this sub-device.")
@click.option("--since", metavar="TIME", help="Samples taken at or after (ISO 8601 or epoch ms).")
@click.option("--until", metavar="TIME", help="Samples taken before (ISO 8601 or epoch ms).")
def export(
    config: str | None,
    db: str | None,
    fmt: str,
    device: str | None,
    since: str | None,
    until: str | None,
) -> None:
    """Write pending samples to stdout as JSON lines or CSV, oldest first.

    Example: gatewayd queue export --format csv --device meter001 --since 2026-11-24 > backlog.csv
    """
    import csv

    from gatewayd.queue import admin as queue_admin

    rows = queue_admin.export(queue_path(config, db), device, parse_time(since), parse_time(until))
    out = sys.stdout
    writer = csv.writer(out) if fmt == "csv" else None
    if writer:
        writer.writerow(["id", "product_key", "device_key", "ts_ms", "points", "attempts"])
    try:
        for row in rows:
            if writer:
                writer.writerow(
                    [
                        row["id"],
                        row["product_key"],
                        row["device_key"],
                        row["ts_ms"],
                        json.dumps(row["points"]),
                        row["attempts"],
                    ]
                )
            else:
                out.write(json.dumps(row) + "\n")
    except GatewaydError as exc:
        fail(str(exc))


@queue.command()
@queue_options
@click.option("--yes", is_flag=True, help="Really drop the samples.")
@click.option("--device", metavar="DEVICE_KEY", help="Only this sub-device's samples.")
@click.option("--before", metavar="TIME", help="Only samples taken before (ISO 8601 or epoch ms).")
def purge(
    config: str | None,
    db: str | None,
    as_json: bool,
    yes: bool,
    device: str | None,
    before: str | None,
) -> None:
    """Drop pending samples: all, one device's, or those taken before a time. Needs --yes.

    Example: gatewayd queue purge --yes --device meter001 --before 2026-11-01
    """
    from gatewayd.queue import admin as queue_admin

    if not yes:
        fail("this drops readings that were never delivered; add --yes to do it", code=2)
    purged = admin(queue_admin.purge, queue_path(config, db), device, parse_time(before))
    click.echo(json.dumps({"purged": purged}) if as_json else f"purged {purged} samples")


@queue.command()
@queue_options
def vacuum(config: str | None, db: str | None, as_json: bool) -> None:
    """Give the space of delivered samples back to the file system."""
    from gatewayd.queue import admin as queue_admin

    before, after = admin(queue_admin.vacuum, queue_path(config, db))
    if as_json:
        click.echo(json.dumps({"bytes_before": before, "bytes_after": after}))
    else:
        click.echo(f"{before:,} -> {after:,} bytes")


@main.command()
@click.option("--outage-s", default=10.0, show_default=True, help="How long the uplink is cut.")
def demo(outage_s: float) -> None:
    """A self-contained show: simulated meters, an embedded broker, the hub simulator, an outage.

    Needs no config and no network; ends by itself in under a minute (Ctrl+C ends it early).
    """
    from gatewayd.sim.demo import run_demo

    setup_logging("WARNING")
    try:
        code = asyncio.run(run_demo(console, outage_s=outage_s))
    except KeyboardInterrupt:
        err_console.print("interrupted: everything was stopped and the temporary queue removed")
        code = 130
    sys.exit(code)


@main.group()
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
    meter does. config.example.toml reads these points (host 127.0.0.1, port 5020).
    """
    from gatewayd.sim.modbus import ModbusSimulator

    unit_ids = [int(u) for u in units.split(",") if u.strip()]
    setup_logging("INFO")

    async def serve() -> None:
        simulator = ModbusSimulator(unit_ids, host, port)
        bound = await simulator.start()
        err_console.print(f"modbus simulator on {host}:{bound} units {unit_ids}")
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
    hub = build_hub(host, port, settings, gateway_secret, model_path, err_console)
    hub.set_faults(reply_code=reply_code)
    serve(hub, where, err_console)
