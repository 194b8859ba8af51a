"""The `gatewayd` command as a user runs it: a real process, its exit code and its output."""

from __future__ import annotations

import asyncio
import sys


async def gatewayd_cli(*args: str, timeout_s: float = 30) -> tuple[int, str]:
    """Run `python -m gatewayd ARGS` with a wide terminal; (exit code, stdout and stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatewayd",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    return proc.returncode or 0, out.decode()
