"""An EnOS hub simulator: answers measurement-point batch requests like the hub, and records them.

It is an ordinary MQTT client on the same broker as the gateway: it subscribes to the gateways'
request topics and publishes on the `_reply` topics. It checks what the real hub checks for these
messages (JSON, method vs topic, element shape) and can be told to misbehave: answer another code,
drop replies, or answer garbage. What it answered 200 for is what the hub "stored".

Control from another process: publish JSON such as `{"reply_code": 1212}` or `{"drop": true}` on
`gatewayd-sim/hub/control`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

CONTROL_TOPIC = "gatewayd-sim/hub/control"
REQUEST_FILTER = "/sys/+/+/thing/measurepoint/#"
_TOPIC_METHODS = {
    "post/batch": "thing.measurepoint.post.batch",
    "resume/batch": "thing.measurepoint.resume.batch",
}


@dataclass(frozen=True)
class Delivery:
    """One sample the hub accepted."""

    method: str
    product_key: str
    device_key: str
    ts_ms: int
    points: dict[str, Any]


@dataclass(frozen=True)
class RequestLog:
    """One request the hub saw, and how it answered (None: no answer)."""

    topic: str
    request_id: str
    method: str
    samples: int
    code: int | None


@dataclass
class Faults:
    """What the simulator should do with the next requests."""

    reply_code: int = 200
    drop: bool = False
    garbage: bool = False


def check_batch(topic: str, body: Any) -> tuple[int, str]:
    """What the hub would answer for a batch request: (code, message)."""
    if not isinstance(body, dict) or "id" not in body:
        return 1220, "Payload format error"
    suffix = topic.split("/thing/measurepoint/", 1)[-1]
    if body.get("method") != _TOPIC_METHODS.get(suffix):
        return 1260, "Methods not consistent"
    params = body.get("params")
    if not isinstance(params, list) or not params:
        return 1206, "Measurepoint post data format error"
    for element in params:
        if not (
            isinstance(element, dict)
            and isinstance(element.get("measurepoints"), dict)
            and isinstance(element.get("time"), int)
            and not isinstance(element.get("time"), bool)
        ):
            return 1206, "Measurepoint post data format error"
    return 200, ""


class HubSimulator:
    """Connect with `start()`; read `deliveries` and `requests`; set `faults` to misbehave."""

    def __init__(self, host: str, port: int, client_id: str = "gatewayd-hub-sim") -> None:
        self.host = host
        self.port = port
        self.faults = Faults()
        self.deliveries: list[Delivery] = []
        self.requests: list[RequestLog] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; returns once requests can be received."""
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"hub simulator could not subscribe at {self.host}:{self.port}")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def set_faults(self, **changes: Any) -> None:
        with self._cond:
            for key, value in changes.items():
                if not hasattr(self.faults, key):
                    raise AttributeError(f"no fault named {key!r}")
                setattr(self.faults, key, value)

    def wait_for(self, predicate: Callable[[HubSimulator], bool], timeout_s: float) -> bool:
        """Block until predicate(self) holds (checked after every request), or time out."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout=timeout_s)

    def delivered_count(self) -> int:
        with self._cond:
            return len(self.deliveries)

    # --- paho thread ---------------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        client.subscribe([(REQUEST_FILTER, 1), (CONTROL_TOPIC, 1)])

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == CONTROL_TOPIC:
            self._control(bytes(message.payload))
        elif not message.topic.endswith("_reply"):
            self._handle_request(message.topic, bytes(message.payload))

    def _control(self, payload: bytes) -> None:
        try:
            self.set_faults(**json.loads(payload))
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("hub_sim_bad_control error=%r", str(exc))

    def _handle_request(self, topic: str, payload: bytes) -> None:
        try:
            body: Any = json.loads(payload)
        except ValueError:
            body = None
        code, message = check_batch(topic, body)
        request_id = str(body.get("id")) if isinstance(body, dict) else ""
        params = body.get("params") if isinstance(body, dict) else None
        n = len(params) if isinstance(params, list) else 0
        with self._cond:
            faults = Faults(**vars(self.faults))
            if code == 200 and faults.reply_code != 200:
                code, message = faults.reply_code, "simulated failure"
            answered: int | None = None if faults.drop or faults.garbage else code
            if answered == 200 and isinstance(params, list):
                method = str(body["method"])
                for element in params:
                    self.deliveries.append(
                        Delivery(
                            method,
                            element.get("productKey", ""),
                            element.get("deviceKey", ""),
                            element["time"],
                            element["measurepoints"],
                        )
                    )
            self.requests.append(
                RequestLog(topic, request_id, str(body and body.get("method")), n, answered)
            )
            self._cond.notify_all()
        if faults.drop or not request_id:
            return
        if faults.garbage:
            self._client.publish(topic + "_reply", b"\x00garbage{", qos=1)
            return
        reply = {"id": request_id, "code": code, "data": {}, "message": message}
        self._client.publish(topic + "_reply", json.dumps(reply), qos=1)
