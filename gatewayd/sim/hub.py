"""An EnOS hub simulator: plays the hub's side of the gateway protocol on an MQTT broker.

It is an ordinary MQTT client on the gateway's broker; the gateway's own CONNECT is checked by
its authenticating front (gatewayd/sim/front.py), which asks `check_login` (secure-mode-2 sign
with the gateway's secret; CONNACK 5 "not authorised" otherwise). It keeps what the hub keeps:
a registry of sub-devices and their secrets, a topology and a login state per gateway, and
thing models (gatewayd/sim/thing_model.py). Every request's envelope is checked first
(gatewayd/sim/hub_checks.py: 1008 size, 1251/1220 format and version, 1260 method), then:

- `thing.topo.get/add` (signs checked with their `signMethod`; 1255 for unknown devices or bad
  signs),
- `combine.login.batch` (705 unknown, 740 not in topology, 742 bad sign, 723 disabled; partial
  failures answer 723 with a per-device list),
- measurement-point batches: 1206 for a malformed element or a seconds-range `time`, 1212 for a
  sub-device that is not logged in through this gateway (unless `allowOfflineSubDevice`; a
  device outside the topology is refused either way), 1204 for a point outside the model or a
  value of the wrong type (unless `skipInvalidMeasurepoints`, which drops just those points);
  the whole request fails with the first error.

With `require_login=False` (open mode) it accepts data for any sub-device, for trying a config.
What it answered 200 for is what the hub stored (`deliveries`). What an operator or a test does
to it (register devices, define models, push commands, inject faults, the control topic) is in
gatewayd/sim/hub_console.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.enos.protocol import is_reply_topic, reply_topic
from gatewayd.sim.hub_checks import METHODS, Refusal, check_request
from gatewayd.sim.hub_console import CONTROL_TOPIC, HubConsole
from gatewayd.sim.hub_records import (
    Delivery,
    Faults,
    GatewayState,
    LoginLog,
    RequestLog,
)
from gatewayd.sim.hub_requests import HubRequests
from gatewayd.sim.login import ConnectPacket, LoginVerdict, check_login
from gatewayd.sim.thing_model import ThingModel

__all__ = ["CONTROL_TOPIC", "HubSimulator"]  # CONTROL_TOPIC: still imported from here

Key = tuple[str, str]


class HubSimulator(HubConsole, HubRequests):
    """Connect with `start()`; register devices; read `deliveries`, `requests` and `logins`."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str = "gatewayd-hub-sim",
        require_login: bool = True,
        keep_deliveries: bool = True,
        model: ThingModel | None = None,
        gateway_secrets: Mapping[Key, str] | None = None,
    ) -> None:
        """`keep_deliveries=False` only counts what was stored (`delivered_samples`), for
        benchmarks that push millions of samples through. `model`: the thing models to check
        data against (none: any point is accepted). `gateway_secrets`: the gateways whose
        CONNECT the front accepts (None: any login is accepted unchecked)."""
        self.host = host
        self.port = port
        self.require_login = require_login
        self.keep_deliveries = keep_deliveries
        self.delivered_samples = 0
        self.faults = Faults()
        self.registry: dict[Key, str] = {}
        self.gateway_secrets = dict(gateway_secrets) if gateway_secrets is not None else None
        self.models: ThingModel = {pk: dict(points) for pk, points in (model or {}).items()}
        self.disabled: set[Key] = set()
        #: Sub-devices whose logins fail (742) although they are in the topology.
        self.deny_login: set[Key] = set()
        self.gateways: dict[Key, GatewayState] = {}
        self.deliveries: list[Delivery] = []
        self.requests: list[RequestLog] = []
        self.logins: list[LoginLog] = []
        self.command_replies: list[dict[str, Any]] = []
        #: Called with every login, topology, session and data event (the CLI prints them).
        self.on_event: Callable[[dict[str, Any]], None] | None = None
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._timers: list[threading.Timer] = []
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # --- set-up and waits ----------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; returns once requests can be received."""
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"hub simulator could not subscribe at {self.host}:{self.port}")

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._client.disconnect()
        self._client.loop_stop()

    def wait_for(self, predicate: Callable[[HubSimulator], bool], timeout_s: float) -> bool:
        """Block until predicate(self) holds (checked after every message), or time out."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout=timeout_s)

    def delivered_count(self) -> int:
        with self._cond:
            return len(self.deliveries)

    def online(self, gateway: Key) -> set[Key]:
        with self._cond:
            return set(self.gateways.get(gateway, GatewayState()).online)

    def check_login(self, connect: ConnectPacket) -> LoginVerdict:
        """The front's judge: the hub's verdict on a device's MQTT CONNECT (recorded)."""
        with self._cond:
            verdict = check_login(connect, self.gateway_secrets)
            self.logins.append(LoginLog(verdict.device, verdict.code, verdict.reason))
            device = "/".join(verdict.device) if verdict.device else connect.username
            self._event(
                kind="connect",
                device=device,
                code=verdict.code,
                accepted=verdict.accepted,
                reason=verdict.reason,
            )
            self._cond.notify_all()
        return verdict

    def _event(self, **event: Any) -> None:
        if self.on_event is not None:
            self.on_event(event)

    # --- paho thread ---------------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        client.subscribe(
            [("/sys/+/+/thing/#", 1), ("/ext/session/+/+/combine/#", 1), (CONTROL_TOPIC, 1)]
        )

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic, payload = message.topic, bytes(message.payload)
        if topic == CONTROL_TOPIC:
            self._control(payload)
            return
        if is_reply_topic(topic):
            if "/combine/" in topic:
                try:
                    body = json.loads(payload)
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    with self._cond:
                        self.command_replies.append({"topic": topic, **body})
                        self._cond.notify_all()
            return
        parts = topic.split("/")
        if parts[1:2] == ["sys"] and len(parts) > 5:  # /sys/{pk}/{dk}/thing/<operation>
            self._answer(topic, (parts[2], parts[3]), "/".join(parts[5:]), payload)
        elif (
            parts[1:3] == ["ext", "session"] and len(parts) > 6
        ):  # /ext/session/{pk}/{dk}/combine/<op>
            self._answer(topic, (parts[3], parts[4]), "/".join(parts[6:]), payload)

    def _answer(self, topic: str, gateway: Key, operation: str, payload: bytes) -> None:
        if operation not in METHODS:
            return  # not a request this simulator plays
        body, refusal = check_request(operation, payload)
        request_id = str(body["id"]) if body and isinstance(body.get("id"), str) else ""
        is_data = operation.startswith("measurepoint/")
        with self._cond:
            state = self.gateways.setdefault(gateway, GatewayState())
            faults = replace(self.faults)
            data: Any = {}
            if is_data:
                code, message = self._data(topic, operation, body, refusal, state, faults)
            elif refusal is not None:
                code, message = refusal.code, refusal.message
                self._event(kind=METHODS[operation], code=code, message=message)
            elif operation == "topo/get":
                code, message = 200, ""
                data = [{"productKey": pk, "deviceKey": dk} for pk, dk in sorted(state.topology)]
                self._event(kind="thing.topo.get", code=code, devices=len(data))
            elif operation == "topo/add":
                assert body is not None
                code, message, data = self._topo_add(body, state)
            else:
                assert body is not None
                code, message, data = self._login_batch(body, state)
            self._cond.notify_all()
        if not request_id or (faults.drop and is_data):
            return
        if faults.garbage and is_data:
            reply = b"\x00garbage{"
        else:
            body_out = {"id": request_id, "code": code, "data": data, "message": message}
            reply = json.dumps(body_out).encode()
        if faults.delay_s > 0 and is_data:
            timer = threading.Timer(
                faults.delay_s, self._client.publish, (reply_topic(topic), reply, 1)
            )
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
            timer.start()
        else:
            self._client.publish(reply_topic(topic), reply, qos=1)

    def _data(
        self,
        topic: str,
        operation: str,
        body: dict[str, Any] | None,
        refusal: Refusal | None,
        state: GatewayState,
        faults: Faults,
    ) -> tuple[int, str]:
        body = body or {}
        method = body.get("method")
        params = body.get("params")
        flags = (
            body.get("allowOfflineSubDevice") is True,
            body.get("skipInvalidMeasurepoints") is True,
        )
        n = len(params) if isinstance(params, list) else 0
        accepted: list[Delivery]
        if refusal is not None:
            code, message, accepted = refusal.code, refusal.message, []
        else:
            code, message, accepted = self._check_batch(
                method, params, flags, state, faults.point_codes
            )
        if code == 200 and faults.reply_code != 200:
            code, message = faults.reply_code, "simulated failure"
        answered = None if faults.drop or faults.garbage else code
        if answered == 200:
            self.delivered_samples += len(accepted)
            if self.keep_deliveries:
                self.deliveries.extend(accepted)
        entry = RequestLog(topic, str(body.get("id")), str(method), n, answered, flags)
        self.requests.append(entry)
        if self.on_event is not None:
            self._event(kind="data", **asdict(entry), message=message)
        return code, message
