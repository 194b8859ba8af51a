"""The gateway ↔ sub-device relation on the hub, and which sub-devices we may send data for.

At every (re)connect: `thing.topo.get`, `thing.topo.add` (signed) for configured sub-devices that
are missing, then `combine.login.batch` for all of them (enos-protocol.md §4.9). A sub-device
that cannot log in is *parked*: its samples stay queued and are not sent (unless
`allow_offline_sub_device`), its login is retried with a growing delay, and every other device's
data keeps flowing. The hub may disable, enable or delete sub-devices at any time (§4.8); a
disabled or deleted device's samples stay queued, untouched, until it is enabled again.

Devices configured without a secret cannot be logged in by us; they are sent as they are, and
parked only if the hub answers 1212 for them.

The requests themselves (built, split to fit, their replies read) are in topo_requests.py; this
module decides what their answers, the hub's commands and the forwarder's 1212s mean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from gatewayd.backoff import backoff_ceiling
from gatewayd.config import DeviceConfig, ForwardConfig, GatewayConfig
from gatewayd.enos.client import MqttSession
from gatewayd.enos.protocol import (
    METHOD_DELETE,
    METHOD_DISABLE,
    METHOD_ENABLE,
    METHOD_LOGIN_BATCH,
    METHOD_TOPO_ADD,
    METHOD_TOPO_GET,
    Command,
    SubDevice,
    device_keys,
    reply_topic,
    session_topic,
    topo_topic,
)
from gatewayd.enos.refusals import login_refusal
from gatewayd.enos.topo_requests import Key, TopoRequests
from gatewayd.errors import TransientError
from gatewayd.runtime.watchdog import Pulse

log = logging.getLogger(__name__)

#: How often a connected gateway re-checks parked sub-devices at the longest.
RECHECK_S = 60.0


def topology_topics(gateway: GatewayConfig) -> list[str]:
    """Reply topics of our topology requests and the command topics we obey."""
    pk, dk = gateway.product_key, gateway.device_key
    return [
        reply_topic(topo_topic(pk, dk, METHOD_TOPO_GET)),
        reply_topic(topo_topic(pk, dk, METHOD_TOPO_ADD)),
        reply_topic(session_topic(pk, dk, METHOD_LOGIN_BATCH)),
        session_topic(pk, dk, METHOD_DISABLE),
        session_topic(pk, dk, METHOD_ENABLE),
        session_topic(pk, dk, METHOD_DELETE),
    ]


class Topology:
    """Keeps the hub's view of our sub-devices right, and answers `sendable(key)`."""

    def __init__(
        self,
        session: MqttSession,
        gateway: GatewayConfig,
        devices: Sequence[DeviceConfig],
        forward: ForwardConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.gateway = gateway
        self.forward = forward
        self.clock = clock
        self.managed = self._managed(devices)
        self._resync = False
        self.online: set[Key] = set()
        self.disabled: set[Key] = set()
        self.parked: dict[Key, float] = {}  # key -> when to try again (monotonic)
        self._park_counts: dict[Key, int] = {}
        #: Times each device was parked since start (never reset; only tests read it so far).
        self.park_counts: dict[Key, int] = {}
        #: Set whenever a device is parked. Only tests wait on it (test_spine, test_refusals,
        #: test_uplink_faults: "a device was parked" without polling); the daemon never reads it.
        self.parked_signal = asyncio.Event()
        #: Set once the topology was synchronised on the current connection.
        self.ready = asyncio.Event()
        #: Grows whenever a device becomes sendable again, so the forwarder re-reads its rows.
        self.generation = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        #: Beats every round; waits on the uplink or the hub are idle (runtime/watchdog.py).
        self.pulse = Pulse("topology")
        self.hub = TopoRequests(session, gateway, forward, self.pulse)
        session.command_handler = self.on_command

    @staticmethod
    def _managed(devices: Sequence[DeviceConfig]) -> dict[Key, SubDevice]:
        managed = {}
        for device in devices:
            if device.device_secret is not None:
                key = (device.product_key, device.device_key)
                managed[key] = SubDevice(*key, device.device_secret.get_secret_value())
        return managed

    def update(self, devices: Sequence[DeviceConfig]) -> None:
        """A reloaded device list: forget removed devices, add and log in new ones."""
        new = self._managed(devices)
        for key in self.managed.keys() - new.keys():
            self.online.discard(key)
            self.parked.pop(key, None)
        self.managed = new
        self._resync = True
        self._wake.set()

    # --- what may be sent -----------------------------------------------------------------------

    def sendable(self, key: Key) -> bool:
        if key in self.disabled:
            return False
        return key not in self.parked or self.forward.allow_offline_sub_device

    def unsendable(self) -> set[Key]:
        """The devices whose samples are held back now (disabled, or parked)."""
        if self.forward.allow_offline_sub_device:
            return set(self.disabled)
        return set(self.disabled) | set(self.parked)

    @property
    def park_events(self) -> int:
        """Parks since start, all devices together (only tests read it, as they do park_counts)."""
        return sum(self.park_counts.values())

    @property
    def has_park_history(self) -> bool:
        """Some device's park delay is still grown (cheap to ask for every reply)."""
        return bool(self._park_counts)

    def confirmed(self, keys: set[Key]) -> None:
        """The hub took samples of these devices: their next park starts at the shortest delay."""
        for key in keys:
            self._park_counts.pop(key, None)

    def park(self, key: Key, reason: str) -> None:
        """Hold a device's samples back and try it again later, with a growing delay.

        Requests in flight for a device that was just parked come back refused too: those are
        the same refusal and change nothing. A retry that fails parks it again, for longer.
        """
        now = self.clock()
        if self.parked.get(key, now) > now:
            return
        self.park_counts[key] = self.park_counts.get(key, 0) + 1
        count = self._park_counts.get(key, 0) + 1
        self._park_counts[key] = count
        delay = backoff_ceiling(count, self.forward.retry_min_s * 5, self.forward.retry_max_s * 5)
        self.parked[key] = now + delay
        self.online.discard(key)
        log.warning(
            "sub_device_parked device=%s/%s reason=%r retry_in_s=%.1f times=%d"
            " note='samples stay queued'",
            key[0],
            key[1],
            reason,
            delay,
            count,
        )
        self.parked_signal.set()
        self._wake.set()

    def _unpark(self, key: Key, forget: bool = True) -> None:
        if self.parked.pop(key, None) is not None:
            log.info("sub_device_unparked device=%s/%s", key[0], key[1])
            self.generation += 1
        if forget:
            self._park_counts.pop(key, None)

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Synchronise after every connect, re-try parked devices while connected; until cancelled."""
        while True:
            self.pulse.beat()
            with self.pulse.idle():
                await self.session.connected.wait()
            await self.sync()
            self.ready.set()
            while self.session.connected.is_set():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._until_next_retry()):
                        waiters = {
                            asyncio.ensure_future(self.session.disconnected.wait()),
                            asyncio.ensure_future(self._wake.wait()),
                        }
                        try:
                            with self.pulse.idle():
                                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            for waiter in waiters:
                                waiter.cancel()
                if self.session.connected.is_set():
                    if self._resync:
                        self._resync = False
                        await self.sync()
                    await self.retry_parked()
            self.ready.clear()
            self.online.clear()  # the hub ends sub-device sessions with the gateway's (§4.9)

    def _until_next_retry(self) -> float:
        if not self.parked:
            return RECHECK_S
        return max(0.0, min(min(self.parked.values()) - self.clock(), RECHECK_S))

    async def retry_parked(self) -> None:
        now = self.clock()
        due = [key for key, at in self.parked.items() if at <= now]
        if not due:
            return
        managed = [self.managed[k] for k in due if k in self.managed and k not in self.disabled]
        for key in due:
            if key not in self.managed:
                # Nothing we can do but try its data again; its next park waits longer, until
                # the hub takes a sample of it (confirmed()).
                self._unpark(key, forget=False)
        if managed:
            async with self._lock:
                try:
                    await self._login(managed)
                except TransientError as exc:  # UplinkDown, ReplyTimeout: the next round retries
                    log.info("sub_device_relogin_unanswered reason=%r", str(exc))

    async def repair(self) -> None:
        """After a 1212: check the topology and log in again (concurrent calls share one run)."""
        if self._lock.locked():
            async with self._lock:
                return
        await self.sync()

    async def sync(self) -> bool:
        """topo.get, topo.add for what is missing, login.batch for all; False if it could not run."""
        async with self._lock:
            wanted = [d for k, d in self.managed.items() if k not in self.disabled]
            try:
                present = await self.hub.present()
                missing = [d for d in wanted if d.key not in present]
                if missing:
                    await self.hub.add(missing)
                if wanted:
                    await self._login(wanted)
            except TransientError as exc:  # UplinkDown, ReplyTimeout: the next round retries
                log.warning("topology_sync_failed reason=%r", str(exc))
                return False
            return True

    async def _login(self, devices: list[SubDevice]) -> None:
        for group in self.hub.groups(devices, METHOD_LOGIN_BATCH):
            reply, logged = await self.hub.login(group)
            wanted = {d.key for d in group}
            for key in logged:
                self.online.add(key)
                self._unpark(key)
            for key in wanted - logged:
                self.park(key, login_refusal(reply.code, reply.message, key))
            log.info("sub_devices_logged_in ok=%d failed=%d", len(logged), len(wanted - logged))

    # --- commands from the hub -----------------------------------------------------------------

    def on_command(self, topic: str, command: Command) -> int:
        keys = device_keys(command.params)
        names = ",".join(f"{pk}/{dk}" for pk, dk in sorted(keys))
        if command.method in (METHOD_DISABLE, METHOD_DELETE):
            self.disabled |= keys
            self.online -= keys
            log.warning(
                "sub_devices_%s devices=%s note='samples stay queued'",
                "disabled" if command.method == METHOD_DISABLE else "deleted",
                names,
            )
            return 200
        if command.method == METHOD_ENABLE:
            self.disabled -= keys
            now = self.clock()
            for key in keys:
                self.parked[key] = now  # log it in at once
            self._wake.set()
            log.info("sub_devices_enabled devices=%s", names)
            return 200
        return 1101  # §1.4: no handler for this command
