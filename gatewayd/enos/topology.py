"""The gateway ↔ sub-device relation on the hub, and which sub-devices we may send data for.

At every (re)connect: `thing.topo.get`, `thing.topo.add` (signed) for configured sub-devices that
are missing, then `combine.login.batch` for all of them (enos-protocol.md §4.9). A sub-device
that cannot log in, or whose data the hub keeps answering 1212 for, is *parked*: its samples
stay queued and are not sent (unless `allow_offline_sub_device`), it is tried again (logged in,
then its data) after a delay that grows with each park (parking.py), and every other device's
data keeps flowing. The hub may disable, enable or delete sub-devices at any time (§4.8); a
disabled or deleted device's samples stay queued, untouched, until it is enabled again.

Devices configured without a secret cannot be logged in by us; they are sent as they are, and
parked only if the hub answers 1212 for them.

The requests themselves (built, split to fit, their replies read) are in topo_requests.py, the
parks' bookkeeping in parking.py; this module decides what the answers, the hub's commands and
the forwarder's 1212s mean, and when to ask the hub again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from gatewayd.config import DeviceConfig, ForwardConfig, GatewayConfig
from gatewayd.enos.client import MqttSession
from gatewayd.enos.parking import Parking
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
        self.parking = Parking(forward, clock)
        self.parked = self.parking.parked  # key -> when to try again (monotonic)
        self.park_counts = self.parking.park_counts
        self.parked_signal = self.parking.parked_signal
        #: Login replies so far, and the one that last logged each device in: a 1212 to a
        #: request sent before its device's latest login is answered by sending it again.
        self.login_rounds = 0
        self._logged: dict[Key, int] = {}
        #: Set once the topology was synchronised on the current connection.
        self.ready = asyncio.Event()
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
            self._logged.pop(key, None)
            self.parking.forget(key)
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
    def generation(self) -> int:
        """Grows whenever a device becomes sendable again, so the forwarder re-reads its rows."""
        return self.parking.generation

    @property
    def park_events(self) -> int:
        """Parks since start, all devices together (only tests read it, as they do park_counts)."""
        return sum(self.park_counts.values())

    @property
    def has_park_history(self) -> bool:
        """Some device's park delay is still grown (cheap to ask for every reply)."""
        return bool(self.parking.strikes)

    def confirmed(self, keys: set[Key]) -> None:
        """The hub took samples of these devices: their next park starts at the shortest delay."""
        self.parking.confirmed(keys)

    def repair_may_help(self, keys: set[Key]) -> bool:
        """Whether a 1212 for these devices' data is worth a repair (get, add, login).

        Not if every one of them was parked since the hub last took a sample of it: its retry
        has just logged it in (or cannot, without a secret), so a repair would only repeat what
        failed, and a hub refusing all data would be asked for the topology at every try.
        """
        return not self.parking.struck(keys)

    def park(self, key: Key, reason: str) -> None:
        """Hold a device's samples back and try it again later, with a growing delay."""
        if self.parking.park(key, reason):
            self.online.discard(key)
            self._wake.set()

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
        # A disabled device is not retried when due (its park would stay due, and this loop
        # wait 0 s for it round after round); `combine.enable` makes it due again.
        first = self.parking.next_due(excluding=self.disabled)
        if first is None:
            return RECHECK_S
        return max(0.0, min(first - self.clock(), RECHECK_S))

    async def retry_parked(self) -> None:
        """Try the devices whose park is over: log them in (those we can), then their data."""
        due = self.parking.due()
        if not due:
            return
        managed = [self.managed[k] for k in due if k in self.managed and k not in self.disabled]
        for key in due:
            if key not in self.managed:
                # Nothing we can do but try its data again; its next park waits longer, until
                # the hub takes a sample of it (confirmed()).
                self.parking.unpark(key)
        if managed:
            async with self._lock:
                try:
                    await self._login(managed)
                except TransientError as exc:  # UplinkDown, ReplyTimeout: the next round retries
                    log.info("sub_device_relogin_unanswered reason=%r", str(exc))

    async def repair(self, keys: set[Key], logins_seen: int) -> None:
        """After a 1212 to a request sent when `login_rounds` was `logins_seen`: check the
        topology and log in again, unless each of its devices we can log in was logged in since
        (by a repair or retry that ran meanwhile: sending the request again is the repair then).
        Concurrent calls wait for each other, so they share one run."""
        async with self._lock:
            stale = [k for k in keys if k in self.managed and self._logged.get(k, 0) <= logins_seen]
            if stale:
                await self._sync()

    async def sync(self) -> bool:
        """topo.get, topo.add for what is missing, login.batch for all but the devices still
        parked (their own retry logs them in); False if it could not run."""
        async with self._lock:
            return await self._sync()

    async def _sync(self) -> bool:
        wanted = [d for k, d in self.managed.items() if k not in self.disabled]
        try:
            present = await self.hub.present()
            missing = [d for d in wanted if d.key not in present]
            if missing:
                await self.hub.add(missing)
            unparked = [d for d in wanted if not self.parking.held(d.key)]
            if unparked:
                await self._login(unparked)
        except TransientError as exc:  # UplinkDown, ReplyTimeout: the next round retries
            log.warning("topology_sync_failed reason=%r", str(exc))
            return False
        return True

    async def _login(self, devices: list[SubDevice]) -> None:
        for group in self.hub.groups(devices, METHOD_LOGIN_BATCH):
            reply, logged = await self.hub.login(group)
            self.login_rounds += 1
            wanted = {d.key for d in group}
            for key in logged:
                self.online.add(key)
                self._logged[key] = self.login_rounds
                if not self.parking.held(key):  # parked while its login was under way: it stands
                    self.parking.unpark(key)
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
            for key in keys:
                self.parking.retry_now(key)  # log it in at once
            self._wake.set()
            log.info("sub_devices_enabled devices=%s", names)
            return 200
        return 1101  # §1.4: no handler for this command
