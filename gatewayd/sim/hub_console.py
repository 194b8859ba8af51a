"""What an operator does to the hub simulator, as against what a gateway's requests do to it.

What the EnOS console does: make sub-devices and gateways known, define thing models, push
`combine.disable/enable/delete` to a gateway (§4.8), end a sub-device's session. And the
simulator's own levers: it can be told to misbehave (`Faults`): force a code, drop replies,
delay them, answer garbage.

Control from another process: publish JSON such as `{"reply_code": 1212}`, `{"drop": true}`
or `{"kick": ["pk", "dk"]}` on `gatewayd-sim/hub/control`; the answer (`{"ok": true}`, or
`{"ok": false, "error": ...}` for a message that is refused) comes on `.../control/reply`.

A mixin of HubSimulator (gatewayd/sim/hub.py), which holds the state and the MQTT client; each
change is made under its lock.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, replace
from typing import Any

import paho.mqtt.client as mqtt

from gatewayd.enos.protocol import METHOD_DISABLE, METHOD_ENABLE, request, session_topic
from gatewayd.sim.hub_checks import parse_control
from gatewayd.sim.hub_records import Faults, GatewayState
from gatewayd.sim.thing_model import ANY_TYPE, PointType, ThingModel

log = logging.getLogger("gatewayd.sim.hub")  # its lines keep the name they were logged under

CONTROL_TOPIC = "gatewayd-sim/hub/control"
CONTROL_REPLY_TOPIC = CONTROL_TOPIC + "/reply"
Key = tuple[str, str]
#: `set_model(pk, ids)` without types: any value is accepted for these ids.
ANY = PointType(ANY_TYPE)


class HubConsole:
    """The console's and the test's side of the hub; the state lives in HubSimulator."""

    _cond: threading.Condition
    _client: mqtt.Client
    registry: dict[Key, str]
    gateway_secrets: dict[Key, str] | None
    models: ThingModel
    faults: Faults
    gateways: dict[Key, GatewayState]
    disabled: set[Key]

    def _event(self, **event: Any) -> None:
        raise NotImplementedError

    def register(self, product_key: str, device_key: str, secret: str) -> None:
        """Make a sub-device known to the hub (as creating it in the console would)."""
        with self._cond:
            self.registry[(product_key, device_key)] = secret

    def register_gateway(self, product_key: str, device_key: str, secret: str) -> None:
        """Make a gateway known: from now on only signed logins are accepted at the front."""
        with self._cond:
            if self.gateway_secrets is None:
                self.gateway_secrets = {}
            self.gateway_secrets[(product_key, device_key)] = secret

    def set_model(self, product_key: str, point_ids: set[str]) -> None:
        """Define the point ids of a product's model (any value type); others get 1204."""
        with self._cond:
            self.models[product_key] = {point: ANY for point in point_ids}

    def set_models(self, model: ThingModel) -> None:
        """Define (or replace) the typed models of the products in `model`."""
        with self._cond:
            self.models.update({pk: dict(points) for pk, points in model.items()})

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

    def _control(self, payload: bytes) -> None:
        """Apply a control message, or refuse it loudly: nothing half-understood is taken."""
        try:
            changes, kick = parse_control(payload)
        except ValueError as exc:
            log.error("hub_sim_control_refused error=%r payload=%r", str(exc), payload[:200])
            answer: dict[str, Any] = {"ok": False, "error": str(exc)}
        else:
            if kick:
                self.kick(*kick)
            if changes:
                self.set_faults(**changes)
            log.info("hub_sim_control_applied changes=%s kick=%s", changes, kick)
            answer = {"ok": True, "faults": asdict(self.faults)}
        with self._cond:
            self._event(kind="control", **answer)
        self._client.publish(CONTROL_REPLY_TOPIC, json.dumps(answer), qos=1)
