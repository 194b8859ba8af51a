"""A 1212 park, with the real Topology and ReplyHandler and a stand-in hub session.

The stand-in answers the topology's requests as a hub that lets every sub-device log in, and
the data requests with whatever `data_code` says (1212: a hub refusing every device's data
although their logins succeed, operator finding F9). The clock is stepped by the test.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from gatewayd.config import DeviceConfig, ForwardConfig, GatewayConfig
from gatewayd.enos.protocol import (
    METHOD_DISABLE,
    METHOD_ENABLE,
    METHOD_LOGIN_BATCH,
    METHOD_POST_BATCH,
    METHOD_RESUME_BATCH,
    METHOD_TOPO_GET,
    Command,
    Reply,
    batch_element,
)
from gatewayd.enos.topology import RECHECK_S, Topology
from gatewayd.forward.replies import ReplyHandler
from gatewayd.model import QueuedSample
from tests.unit.test_forwarder import NOW_MS, MemoryQueue

Key = tuple[str, str]
A, B = ("pk", "a"), ("pk", "b")


class LoginHub:
    """A session whose hub takes every login and answers data with `data_code`.

    A device key in `gates` holds the replies to data requests that start with its rows until
    that gate is opened (a request still in flight while others are answered)."""

    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        self.data_code = 1212
        self.methods: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.held = asyncio.Event()  # set once a data reply waits at a gate
        self.command_handler: Any = None
        self.connections = 1  # one session all along (the forwarder notes reconnections)
        #: The device keys of each data request, and which devices were parked when it went.
        self.data_requests: list[tuple[set[str], set[str]]] = []
        self.parked_now: Any = lambda: set()
        self._ids = iter(range(1, 10**9))

    def next_id(self) -> str:
        return str(next(self._ids))

    async def request(self, topic: str, request_id: str, payload: bytes, timeout_s: float) -> Reply:
        body = json.loads(payload)
        method = body["method"]
        self.methods.append(method)
        if method == METHOD_TOPO_GET:
            listed = [{"productKey": pk, "deviceKey": dk} for pk, dk in self.keys]
            return Reply(request_id, 200, "", listed)
        if method == METHOD_LOGIN_BATCH:
            return Reply(request_id, 200, "", {})
        carried = {p["deviceKey"] for p in body["params"]}
        self.data_requests.append((carried, {dk for _, dk in self.parked_now()}))
        gate = self.gates.get(body["params"][0]["deviceKey"])
        if gate is not None:
            self.held.set()
            await gate.wait()
        return Reply(request_id, self.data_code, "No sub-device permission", {})

    def count(self, method: str) -> int:
        return self.methods.count(method)


def device(key: Key) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {
            "name": key[1],
            "product_key": key[0],
            "device_key": key[1],
            "device_secret": f"secret-of-{key[1]}",
            "modbus": {"transport": "tcp", "host": "127.0.0.1", "port": 1, "unit_id": 1},
            "points": [{"id": "P", "address": 0}],
        }
    )


class Rig:
    """A Topology and a ReplyHandler sharing the stand-in session, a queue and a clock."""

    def __init__(self, *keys: Key) -> None:
        self.clock = [0.0]
        self.hub = LoginHub(list(keys))
        self.queue = MemoryQueue([])
        forward = ForwardConfig(retry_min_s=1, retry_max_s=100)
        gateway = GatewayConfig(product_key="gw", device_key="gw1", device_secret="s")
        session = cast(Any, self.hub)
        self.topology = Topology(
            session, gateway, [device(k) for k in keys], forward, clock=lambda: self.clock[0]
        )
        topics = {METHOD_POST_BATCH: "post", METHOD_RESUME_BATCH: "resume"}
        self.handler = ReplyHandler(cast(Any, self.queue), session, self.topology, forward, topics)
        self.handler.clock = lambda: self.clock[0]
        self.hub.parked_now = lambda: set(self.topology.parked)
        self._next_id = 1

    def rows(self, key: Key, n: int = 3) -> list[QueuedSample]:
        out = []
        for i in range(n):
            row_id = self._next_id
            self._next_id += 1
            out.append(QueuedSample(row_id, key[0], key[1], NOW_MS + row_id, json.dumps({"P": i})))
        self.queue.rows.update({r.id: r for r in out})
        return out

    async def send(self, key: Key) -> None:
        batch = self.rows(key)
        await self.handler.send(batch, [batch_element(r) for r in batch], METHOD_RESUME_BATCH)

    def delay(self, key: Key) -> float:
        return self.topology.parked[key] - self.clock[0]


async def test_a_park_holds_while_another_device_is_refused_and_its_topology_repaired() -> None:
    """F9: b's 1212 repaired the topology, whose login of every device unparked a (and forgot
    its park) within milliseconds of parking it; the two then took turns for ever."""
    rig = Rig(A, B)
    await rig.topology.sync()
    await rig.send(A)
    assert rig.delay(A) == 5.0
    rig.clock[0] = 1.0
    await rig.send(B)
    assert B in rig.topology.parked
    assert A in rig.topology.parked and rig.topology.parked[A] == 5.0  # its 5 s still stand
    assert rig.topology.unsendable() == {A, B}


async def test_each_further_park_of_a_device_that_logs_in_waits_longer() -> None:
    """F9 with one device: its retry's login succeeded and forgot the park, so the next 1212
    parked it for the shortest delay again (`times=1`, `retry_in_s=5.0` for ever)."""
    rig = Rig(A)
    await rig.topology.sync()
    delays = []
    for _ in range(4):
        await rig.send(A)
        delays.append(rig.delay(A))
        rig.clock[0] = rig.topology.parked[A]
        await rig.topology.retry_parked()  # due: logged in (the hub takes it) and unparked
        assert A not in rig.topology.parked
    assert delays == [5.0, 10.0, 20.0, 40.0]
    rig.hub.data_code = 200
    await rig.send(A)  # the hub takes a sample of it at last ...
    rig.hub.data_code = 1212
    await rig.send(A)
    assert rig.delay(A) == 5.0  # ... so its next park starts short again


async def test_a_device_back_from_its_park_is_not_repaired_again() -> None:
    """Its retry has just logged it in: a 1212 for its data now parks it again at once, with no
    `thing.topo.get` and no second login (a hub refusing everything must not be hammered)."""
    rig = Rig(A)
    await rig.topology.sync()
    await rig.send(A)
    assert rig.hub.count(METHOD_TOPO_GET) == 2  # the sync, and the repair of the first 1212
    rig.clock[0] = rig.topology.parked[A]
    before = len(rig.hub.methods)
    await rig.topology.retry_parked()
    await rig.send(A)
    assert rig.hub.methods[before:] == [METHOD_LOGIN_BATCH, METHOD_RESUME_BATCH]
    assert rig.delay(A) == 10.0


async def test_a_request_sent_before_a_repair_is_resent_without_another() -> None:
    """b's request was in flight when a's 1212 repaired the topology (get, login for all): b's
    1212 predates that login, so b's rows are sent again at once, not after a second repair."""
    rig = Rig(A, B)
    await rig.topology.sync()
    rig.hub.gates["b"] = gate = asyncio.Event()
    in_flight = asyncio.create_task(rig.send(B))
    async with asyncio.timeout(5):
        await rig.hub.held.wait()  # b's request is out, awaiting its reply
    await rig.send(A)
    assert A in rig.topology.parked
    gets = rig.hub.count(METHOD_TOPO_GET)
    gate.set()
    await in_flight
    assert rig.topology.unsendable() == {A, B}
    assert rig.hub.count(METHOD_TOPO_GET) == gets


async def test_a_parked_device_the_hub_disables_is_not_waited_for_in_a_busy_loop() -> None:
    """A disabled device is not logged in when its park is due, so its park stayed due: the
    topology's loop waited 0 s for it, round after round, until the hub enabled it again."""
    rig = Rig(A)
    await rig.topology.sync()
    await rig.send(A)
    rig.topology.on_command(
        "t", Command("c1", METHOD_DISABLE, [{"productKey": "pk", "deviceKey": "a"}])
    )
    rig.clock[0] = 100.0
    await rig.topology.retry_parked()
    assert rig.topology._until_next_retry() == RECHECK_S
    rig.topology.on_command(
        "t", Command("c2", METHOD_ENABLE, [{"productKey": "pk", "deviceKey": "a"}])
    )
    assert rig.topology._until_next_retry() == 0.0  # enabled: logged in at once
    await rig.topology.retry_parked()
    assert rig.topology.unsendable() == set() and A in rig.topology.online


async def test_a_device_parked_mid_bisection_is_not_sent_again_in_it() -> None:
    """Rows of three devices in turn, the hub answering 1212 to every data request: the
    bisection parked a device and went on sending its rows in the other halves. Found by an
    adversary: 383-556 data requests a round for 287 rows, parks in step, and rows of parked
    devices taken when the hub came back (their strike counts cleared)."""
    c = ("pk", "c")
    rig = Rig(A, B, c)
    await rig.topology.sync()
    batch = [
        row
        for trio in zip(rig.rows(A, 8), rig.rows(B, 8), rig.rows(c, 8), strict=True)
        for row in trio
    ]
    await rig.handler.send(batch, [batch_element(r) for r in batch], METHOD_RESUME_BATCH)
    assert rig.topology.unsendable() == {A, B, c}
    late = [(carried, parked) for carried, parked in rig.hub.data_requests if carried & parked]
    assert late == []
    assert len(rig.hub.data_requests) <= 12, len(rig.hub.data_requests)
