"""An EnOS hub simulator: plays the hub's side of the gateway protocol on an MQTT broker.

It is an ordinary MQTT client on the gateway's broker. It keeps what the hub keeps: a registry
of sub-devices and their secrets, a topology and a login state per gateway, and optional thing
models (the point ids a product defines). It answers as enos-protocol.md says the hub answers:

- `thing.topo.get/add` (signs checked; 1255 for unknown devices or bad signs),
- `combine.login.batch` (740 not in topology, 742 bad sign, 723 disabled; partial failures),
- measurement-point batches: 1206 for a malformed element, 1212 for a sub-device that is not
  logged in through this gateway (unless `allowOfflineSubDevice`; a device outside the topology
  is refused either way), 1204 for a point outside the model (unless `skipInvalidMeasurepoints`,
  which drops just those points); the whole request fails with the first error.

With `require_login=False` (open mode) it accepts data for any sub-device, for trying a config.
It can be told to misbehave (`Faults`): force a code, drop replies, delay them, answer garbage.
What it answered 200 for is what the hub stored (`deliveries`).

Control from another process: publish JSON such as `{"reply_code": 1212}`, `{"drop": true}`
or `{"kick": ["pk", "dk"]}` on `gatewayd-sim/hub/control`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.enos.protocol import (
    LOGIN_BATCH_CLIENT_ID,
    METHOD_DISABLE,
    METHOD_ENABLE,
    request,
    session_topic,
    sign,
)

log = logging.getLogger(__name__)

CONTROL_TOPIC = "gatewayd-sim/hub/control"
Key = tuple[str, str]

_MEASUREPOINT_METHODS = {
    "measurepoint/post/batch": "thing.measurepoint.post.batch",
    "measurepoint/resume/batch": "thing.measurepoint.resume.batch",
}


@dataclass(frozen=True)
class Delivery:
    """One sample the hub accepted."""

    method: str
    product_key: str
    device_key: str
    ts_ms: int
    points: dict[str, Any]
    #: When the hub accepted it (wall clock, seconds), to measure how far behind the drain ran.
    received_s: float = field(default_factory=time.time)


@dataclass(frozen=True)
class RequestLog:
    """One request the hub saw, and how it answered (None: no answer)."""

    topic: str
    request_id: str
    method: str
    samples: int
    code: int | None
    flags: tuple[bool, bool] = (False, False)


@dataclass
class Faults:
    """What the simulator should do with the next requests."""

    reply_code: int = 200  # anything but 200 replaces the answer to data requests
    drop: bool = False
    garbage: bool = False
    delay_s: float = 0.0
    #: Refuse any batch with an element carrying this point id, with this code (e.g. 1206).
    point_codes: dict[str, int] = field(default_factory=dict)


@dataclass
class GatewayState:
    topology: set[Key] = field(default_factory=set)
    online: set[Key] = field(default_factory=set)


class HubSimulator:
    """Connect with `start()`; register devices; read `deliveries` and `requests`."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str = "gatewayd-hub-sim",
        require_login: bool = True,
        keep_deliveries: bool = True,
    ) -> None:
        """`keep_deliveries=False` only counts what was stored (`delivered_samples`), for
        benchmarks that push millions of samples through."""
        self.host = host
        self.port = port
        self.require_login = require_login
        self.keep_deliveries = keep_deliveries
        self.delivered_samples = 0
        self.faults = Faults()
        self.registry: dict[Key, str] = {}
        self.models: dict[str, set[str]] = {}
        self.disabled: set[Key] = set()
        #: Sub-devices whose logins fail (742) although they are in the topology.
        self.deny_login: set[Key] = set()
        self.gateways: dict[Key, GatewayState] = {}
        self.deliveries: list[Delivery] = []
        self.requests: list[RequestLog] = []
        self.command_replies: list[dict[str, Any]] = []
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

    # --- set-up and control -------------------------------------------------------------------

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

    def register(self, product_key: str, device_key: str, secret: str) -> None:
        """Make a sub-device known to the hub (as creating it in the console would)."""
        with self._cond:
            self.registry[(product_key, device_key)] = secret

    def set_model(self, product_key: str, point_ids: set[str]) -> None:
        """Define the points a product's thing model has; others are refused with 1204."""
        with self._cond:
            self.models[product_key] = set(point_ids)

    def set_faults(self, **changes: Any) -> None:
        with self._cond:
            self.faults = replace(self.faults, **changes)

    def kick(self, product_key: str, device_key: str) -> None:
        """End a sub-device's session, as when it drops offline in the field."""
        with self._cond:
            for state in self.gateways.values():
                state.online.discard((product_key, device_key))

    def send_command(self, gateway: Key, method: str, devices: list[Key], request_id: str) -> None:
        """Push combine.disable / enable / delete to a gateway (§4.8)."""
        with self._cond:
            for key in devices:
                if method == METHOD_DISABLE:
                    self.disabled.add(key)
                    self.kick(*key)
                elif method == METHOD_ENABLE:
                    self.disabled.discard(key)
        params = [{"productKey": pk, "deviceKey": dk} for pk, dk in devices]
        topic = session_topic(gateway[0], gateway[1], method)
        self._client.publish(topic, request(request_id, method, params), qos=1)

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
        try:
            body: Any = json.loads(payload)
        except ValueError:
            body = None
        if topic.endswith("_reply"):
            if "/combine/" in topic and isinstance(body, dict):
                with self._cond:
                    self.command_replies.append({"topic": topic, **body})
                    self._cond.notify_all()
            return
        parts = topic.split("/")
        if parts[1:2] == ["sys"] and len(parts) > 5:  # /sys/{pk}/{dk}/thing/<operation>
            self._answer(topic, (parts[2], parts[3]), "/".join(parts[5:]), body)
        elif (
            parts[1:3] == ["ext", "session"] and len(parts) > 6
        ):  # /ext/session/{pk}/{dk}/combine/<op>
            self._answer(topic, (parts[3], parts[4]), "/".join(parts[6:]), body)

    def _control(self, payload: bytes) -> None:
        try:
            command = json.loads(payload)
            kick = command.pop("kick", None)
            if kick:
                self.kick(*kick)
            if command:
                self.set_faults(**command)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("hub_sim_bad_control error=%r", str(exc))

    def _answer(self, topic: str, gateway: Key, operation: str, body: Any) -> None:
        request_id = str(body.get("id")) if isinstance(body, dict) and "id" in body else ""
        with self._cond:
            state = self.gateways.setdefault(gateway, GatewayState())
            faults = replace(self.faults)
            is_data = operation in _MEASUREPOINT_METHODS
            data: Any
            if not isinstance(body, dict) or not request_id:
                code, message, data = 1220, "Payload format error", {}
            elif is_data:
                code, message, data = self._data(topic, operation, body, state, faults)
            elif operation == "topo/get":
                code, message = 200, ""
                data = [{"productKey": pk, "deviceKey": dk} for pk, dk in sorted(state.topology)]
            elif operation == "topo/add":
                code, message, data = self._topo_add(body, state)
            elif operation == "login/batch":
                code, message, data = self._login_batch(body, state)
            else:
                return  # not a request this simulator plays
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
                faults.delay_s, self._client.publish, (topic + "_reply", reply, 1)
            )
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
            timer.start()
        else:
            self._client.publish(topic + "_reply", reply, qos=1)

    def _data(
        self, topic: str, operation: str, body: dict[str, Any], state: GatewayState, faults: Faults
    ) -> tuple[int, str, Any]:
        method = body.get("method")
        params = body.get("params")
        flags = (
            body.get("allowOfflineSubDevice") is True,
            body.get("skipInvalidMeasurepoints") is True,
        )
        n = len(params) if isinstance(params, list) else 0
        code, message, accepted = self._check_batch(operation, method, params, flags, state)
        if code == 200 and faults.point_codes and isinstance(params, list):
            for element in params:
                hits = [
                    faults.point_codes[p]
                    for p in element["measurepoints"]
                    if p in faults.point_codes
                ]
                if hits:
                    code, message, accepted = hits[0], "simulated refusal of a point", []
                    break
        if code == 200 and faults.reply_code != 200:
            code, message = faults.reply_code, "simulated failure"
        answered = None if faults.drop or faults.garbage else code
        if answered == 200:
            self.delivered_samples += len(accepted)
            if self.keep_deliveries:
                self.deliveries.extend(accepted)
        self.requests.append(
            RequestLog(topic, str(body.get("id")), str(method), n, answered, flags)
        )
        return code, message, {}

    def _check_batch(
        self,
        operation: str,
        method: Any,
        params: Any,
        flags: tuple[bool, bool],
        state: GatewayState,
    ) -> tuple[int, str, list[Delivery]]:
        if method != _MEASUREPOINT_METHODS[operation]:
            return 1260, "Methods not consistent", []
        if not isinstance(params, list) or not params:
            return 1206, "Measurepoint post data format error", []
        allow_offline, skip_invalid = flags
        accepted: list[Delivery] = []
        for element in params:
            if not _well_formed(element):
                return 1206, "Measurepoint post data format error", []
            key = (element["productKey"], element["deviceKey"])
            if self.require_login and not (
                key in state.online
                or (allow_offline and key in state.topology and key not in self.disabled)
            ):
                return 1212, f"No sub-device permission: {key[0]}/{key[1]}", []
            points = dict(element["measurepoints"])
            model = self.models.get(key[0])
            if model is not None and not set(points) <= model:
                if not skip_invalid:
                    unknown = sorted(set(points) - model)
                    return 1204, f"Model validate failed: {unknown}", []
                points = {k: v for k, v in points.items() if k in model}
            accepted.append(Delivery(str(method), key[0], key[1], element["time"], points))
        return 200, "", accepted

    def _signed(self, key: Key, client_id: str, timestamp: str, signature: Any) -> bool:
        if not self.require_login and key not in self.registry:
            return True  # open mode: any sub-device is welcome
        secret = self.registry.get(key)
        if secret is None or not isinstance(signature, str):
            return False
        fields = {
            "clientId": client_id,
            "deviceKey": key[1],
            "productKey": key[0],
            "timestamp": timestamp,
        }
        return sign(fields, secret).upper() == signature.upper()

    def _topo_add(self, body: dict[str, Any], state: GatewayState) -> tuple[int, str, Any]:
        failures = []
        for entry in body.get("params") or []:
            key = (str(entry.get("productKey")), str(entry.get("deviceKey")))
            if self._signed(
                key, str(entry.get("clientId")), str(entry.get("timestamp")), entry.get("sign")
            ):
                state.topology.add(key)
            else:
                failures.append(f"{key[0]}/{key[1]}")
        if failures:
            return 1255, f"add topo failure, {failures}", {}
        return 200, "", {}

    def _login_batch(self, body: dict[str, Any], state: GatewayState) -> tuple[int, str, Any]:
        params = body.get("params") or {}
        client_id = str(params.get("clientId", LOGIN_BATCH_CLIENT_ID))
        timestamp = str(params.get("timestamp"))
        logged, failed, reasons = [], [], []
        for entry in params.get("subDevices") or []:
            key = (str(entry.get("productKey")), str(entry.get("deviceKey")))
            item = {"productKey": key[0], "deviceKey": key[1]}
            if key not in self.registry and self.require_login:
                reason = 705
            elif key not in state.topology:
                reason = 740
            elif key in self.deny_login or not self._signed(
                key, client_id, timestamp, entry.get("sign")
            ):
                reason = 742
            elif key in self.disabled:
                reason = 723
            else:
                state.online.add(key)
                logged.append({**item, "assetId": f"asset-{key[1]}"})
                continue
            failed.append(item)
            reasons.append(f"{key[0]}/{key[1]}: {reason}")
        data = {"loginedSubDevices": logged, "failedSubDevices": failed}
        if failed:
            return 723, "; ".join(reasons), data
        return 200, "", data


def _well_formed(element: Any) -> bool:
    return (
        isinstance(element, dict)
        and isinstance(element.get("productKey"), str)
        and isinstance(element.get("deviceKey"), str)
        and isinstance(element.get("measurepoints"), dict)
        and isinstance(element.get("time"), int)
        and not isinstance(element.get("time"), bool)
    )
