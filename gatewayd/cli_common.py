"""What every `gatewayd` command shares: where the config is, how a failure is said, consoles."""

from __future__ import annotations

import functools
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from gatewayd.config import DEFAULT_CONFIG_PATH, Settings, load_config
from gatewayd.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

EX_CONFIG = 78


# rich is imported when something is printed, not at start: `gatewayd run` prints nothing
# unless it fails, and under a CPU quota every import before READY counts (bench/poll.py).
@functools.cache
def console() -> Console:
    """Standard output, for people."""
    from rich.console import Console

    return Console()


@functools.cache
def err_console() -> Console:
    """Standard error, for people."""
    from rich.console import Console

    return Console(stderr=True)


def config_path(path: str | None) -> Path:
    """`-c`, else $GATEWAYD_CONFIG, else the system default."""
    return Path(path or os.environ.get("GATEWAYD_CONFIG") or DEFAULT_CONFIG_PATH)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console().print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def load_or_exit(path: str | None) -> Settings:
    try:
        return load_config(config_path(path))
    except ConfigError as exc:
        config_failure(exc)


def config_failure(exc: ConfigError) -> NoReturn:
    """Every problem, one a line, and EX_CONFIG (which systemd does not restart)."""
    err_console().print(f"[bold red]invalid configuration[/] {exc.source}", highlight=False)
    for problem in exc.problems:
        err_console().print(f"  {problem}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(EX_CONFIG)


config_option = click.option(
    "-c",
    "--config",
    "config",
    metavar="PATH",
    help="Config file (default: $GATEWAYD_CONFIG, else /etc/gatewayd/config.toml).",
)


def fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
