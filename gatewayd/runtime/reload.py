"""SIGHUP: re-read the config file; apply a new device list without a restart.

A config that does not validate is refused with every problem named, and the running one stays.
Sections that only a restart can apply (gateway, mqtt, queue, forward, metrics) are named in a
warning and keep their running values.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from gatewayd.config import Settings
from gatewayd.errors import ConfigError

log = logging.getLogger(__name__)

RESTART_SECTIONS = ("gateway", "mqtt", "queue", "forward", "metrics")


class Reloader:
    """Waits for `requested` (set by the signal handler) and applies what can be applied live."""

    def __init__(
        self,
        loader: Callable[[], Settings] | None,
        current: Callable[[], Settings],
        apply_devices: Callable[[Settings], Awaitable[None]],
    ) -> None:
        """`loader` re-reads the config (None: started without a file, no reloads)."""
        self.loader = loader
        self.current = current
        self.apply_devices = apply_devices
        self.requested = asyncio.Event()

    async def run(self) -> None:
        while True:
            await self.requested.wait()
            self.requested.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Apply a re-read config's devices without a restart; refuse an invalid one."""
        if self.loader is None:
            log.warning("reload_unavailable note='started without a config file'")
            return False
        try:
            new = await asyncio.to_thread(self.loader)
        except ConfigError as exc:
            log.error(
                "reload_refused problems=%s note='the running config stays'",
                json.dumps(exc.problems),
            )
            return False
        running = self.current()
        fixed = [name for name in RESTART_SECTIONS if getattr(new, name) != getattr(running, name)]
        if fixed:
            log.warning(
                "reload_needs_restart sections=%s note='kept the running values'", ",".join(fixed)
            )
        old_names = {d.name for d in running.devices}
        new_names = {d.name for d in new.devices}
        if new.devices != running.devices:
            await self.apply_devices(running.model_copy(update={"devices": new.devices}))
        log.info(
            "reloaded devices=%d added=%s removed=%s",
            len(new.devices),
            ",".join(sorted(new_names - old_names)) or "-",
            ",".join(sorted(old_names - new_names)) or "-",
        )
        return True
