"""A bare gateway for talking to the hub simulator by hand: signed CONNECT, raw requests.

The daemon never sends a wrong method or a seconds-range `time`; to see what the hub answers
such requests, a test sends them itself through this client (a real paho client on the real
broker, nothing mocked).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.clocks import now_ms
from gatewayd.enos.protocol import device_credentials, is_reply_topic, reply_topic

GATEWAY = ("gwPK", "gw001", "gw-secret")


class RawGateway:
    """Connect as a gateway (`secret` signs the CONNECT); `ask` publishes and awaits the reply."""

    def __init__(self, port: int, product_key: str, device_key: str, secret: str) -> None:
        creds = device_credentials(product_key, device_key, secret, now_ms())
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=creds.client_id, protocol=mqtt.MQTTv311
        )
        self.client.username_pw_set(creds.username, creds.password)
        self.port = port
        self.connack: int | None = None
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._replies: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message

    def connect(self, timeout_s: float = 10.0) -> int:
        """Connect; returns the CONNACK return code (0: accepted)."""
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        assert self._connected.wait(timeout_s), "no CONNACK"
        assert self.connack is not None
        if self.connack == 0:
            assert self._subscribed.wait(timeout_s), "no SUBACK"
        return self.connack

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def ask(self, topic: str, payload: bytes | dict[str, Any], timeout_s: float = 10.0) -> Any:
        """Publish a request and return the reply body that arrives on `topic_reply`."""
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(topic, raw, qos=1)
        deadline = time.monotonic() + timeout_s
        while True:
            got_topic, body = self._replies.get(timeout=max(0.01, deadline - time.monotonic()))
            if got_topic == reply_topic(topic):
                return body

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, p: Any) -> None:
        self.connack = int(rc.value) if hasattr(rc, "value") else int(rc)
        if self.connack in (134, 135):  # paho 2 maps 3.1.1 return codes 4/5 to MQTT 5 codes
            self.connack = {134: 4, 135: 5}[self.connack]
        self._connected.set()
        if not rc.is_failure:
            client.subscribe([("/sys/+/+/thing/#", 1), ("/ext/session/+/+/combine/#", 1)])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if is_reply_topic(message.topic):
            try:
                body = json.loads(message.payload)
            except ValueError:
                body = {"raw": bytes(message.payload)}
            self._replies.put((message.topic, body))


def envelope(request_id: str, method: str, params: Any, **top: Any) -> dict[str, Any]:
    return {"id": request_id, "version": "1.1", "method": method, "params": params, **top}
