"""`gatewayd queue …`: inspect and manage a queue file, beside a running daemon or on a copy."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from gatewayd.cli_common import config_option, console, fail, fmt_ms, load_or_exit
from gatewayd.errors import GatewaydError


@click.group()
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
    from rich.table import Table

    table = Table(title=f"queue {figures.path}", show_header=False)
    rows = [
        ("pending samples", f"{figures.pending_samples:,}"),
        ("pending points", f"{figures.pending_points:,}"),
        ("oldest sample", fmt_ms(figures.oldest_ts_ms)),
        ("newest sample", fmt_ms(figures.newest_ts_ms)),
        ("file size", f"{figures.file_bytes:,} B"),
        ("rejected (dead letter)", f"{figures.rejected:,}"),
    ]
    rows += [_state_row(key, value) for key, value in sorted(figures.state.items())]
    for key, value in rows:
        table.add_row(key, value)
    console().print(table)


def _state_row(key: str, value: Any) -> tuple[str, str]:
    """A `state` entry for people: times (`*_ms`) in ISO 8601 like the sample times above."""
    if key.endswith("_ms") and isinstance(value, int) and not isinstance(value, bool):
        return key.removesuffix("_ms").replace("_", " "), fmt_ms(value or None)
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
                fmt_ms(row["ts_ms"]),
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
