"""Signals only set a flag; the daemon acts on it.

The first SIGTERM/SIGINT starts a graceful stop; a second one stops the waiting for in-flight
replies. SIGHUP asks for a reload of the device list (reload.py).
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

from gatewayd.early import reload_was_requested

if TYPE_CHECKING:
    from gatewayd.runtime.daemon import Daemon


async def run_until_signal(daemon: Daemon) -> None:
    """Run the daemon with the stop and reload signals wired to it."""
    stop = asyncio.Event()

    def on_stop() -> None:
        if stop.is_set():
            daemon.hurry.set()
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload_requested.set)
    if reload_was_requested():  # a SIGHUP while starting (gatewayd/early.py)
        daemon.reload_requested.set()
    await daemon.run(stop)
