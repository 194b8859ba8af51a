"""The topology's requests to the hub: `thing.topo.get`, `thing.topo.add`, `combine.login.batch`.

Each request is built, split to fit `forward.batch_max_bytes` (1,000 sub-devices make a request
of ~200 KB, which a broker with a small packet limit drops, and the gateway would never sync),
sent, and its reply read. What the answers mean for the devices (online, parked) is decided by
the topology (topology.py); this module only talks to the hub.
"""

from __future__ import annotations

import json
import logging
from typing import TypeVar

from gatewayd.clocks import now_ms
from gatewayd.config import ForwardConfig, GatewayConfig
from gatewayd.enos.client import MqttSession
from gatewayd.enos.protocol import (
    METHOD_LOGIN_BATCH,
    METHOD_TOPO_ADD,
    METHOD_TOPO_GET,
    Reply,
    SubDevice,
    device_keys,
    login_batch_params,
    request,
    session_topic,
    topo_add_params,
    topo_topic,
)
from gatewayd.logs import clip
from gatewayd.runtime.watchdog import Pulse

# The topology's lines, wherever in it they are written (`logger=gatewayd.enos.topology`).
log = logging.getLogger("gatewayd.enos.topology")

Key = tuple[str, str]
T = TypeVar("T")


def split_by_size(items: list[T], sizes: list[int], budget: int) -> list[list[T]]:
    """Consecutive groups of items whose sizes add up to at most `budget` (an item larger than
    the budget goes alone: the hub may still take it, and nothing is left out)."""
    groups: list[list[T]] = []
    group: list[T] = []
    used = 0
    for item, size in zip(items, sizes, strict=True):
        if group and used + size > budget:
            groups.append(group)
            group, used = [], 0
        group.append(item)
        used += size
    if group:
        groups.append(group)
    return groups


class TopoRequests:
    """The three requests, on the gateway's session; waits on the hub are idle for `pulse`."""

    def __init__(
        self, session: MqttSession, gateway: GatewayConfig, forward: ForwardConfig, pulse: Pulse
    ) -> None:
        self.session = session
        self.gateway = gateway
        self.forward = forward
        self.pulse = pulse

    async def present(self) -> set[Key]:
        """The sub-devices the hub has under this gateway (none when it refuses to say)."""
        gw = self.gateway
        reply = await self._request(
            topo_topic(gw.product_key, gw.device_key, METHOD_TOPO_GET), METHOD_TOPO_GET, {}
        )
        if not reply.ok:
            log.warning("topology_get_refused code=%d message=%r", reply.code, clip(reply.message))
            return set()
        return device_keys(reply.data)

    async def add(self, devices: list[SubDevice]) -> None:
        """Add the devices under this gateway, in groups that fit; a refusal is logged."""
        for group in self.groups(devices, METHOD_TOPO_ADD):
            await self._add_group(group)

    async def login(self, devices: list[SubDevice]) -> tuple[Reply, set[Key]]:
        """Log one group in (see `groups`): the reply, and the devices it logged in."""
        gw = self.gateway
        params = login_batch_params(devices, now_ms())
        reply = await self._request(
            session_topic(gw.product_key, gw.device_key, METHOD_LOGIN_BATCH),
            METHOD_LOGIN_BATCH,
            params,
        )
        wanted = {d.key for d in devices}
        if reply.ok:
            return reply, wanted
        data = reply.data if isinstance(reply.data, dict) else {}
        return reply, device_keys(data.get("loginedSubDevices")) & wanted

    def groups(self, devices: list[SubDevice], method: str) -> list[list[SubDevice]]:
        """The devices in groups whose request stays within forward.batch_max_bytes."""
        ts = now_ms()
        if method == METHOD_TOPO_ADD:
            entries: list[object] = list(topo_add_params(devices, ts))
            empty: object = []
        else:
            entries = list(login_batch_params(devices, ts)["subDevices"])
            empty = login_batch_params([], ts)
        overhead = len(request("9" * 40, method, empty)) + 64
        sizes = [len(json.dumps(entry, separators=(",", ":"))) + 1 for entry in entries]
        return split_by_size(devices, sizes, self.forward.batch_max_bytes - overhead)

    async def _request(self, topic: str, method: str, params: object) -> Reply:
        request_id = self.session.next_id()
        payload = request(request_id, method, params)
        with self.pulse.idle():
            return await self.session.request(
                topic, request_id, payload, self.forward.reply_timeout_s
            )

    async def _add_group(self, devices: list[SubDevice]) -> None:
        gw = self.gateway
        params = topo_add_params(devices, now_ms())
        reply = await self._request(
            topo_topic(gw.product_key, gw.device_key, METHOD_TOPO_ADD), METHOD_TOPO_ADD, params
        )
        names = clip(",".join(f"{d.product_key}/{d.device_key}" for d in devices))
        if reply.ok:
            log.info("topology_added count=%d devices=%s", len(devices), names)
        else:
            log.warning(
                "topology_add_refused code=%d message=%r count=%d devices=%s",
                reply.code,
                clip(reply.message),
                len(devices),
                names,
            )
