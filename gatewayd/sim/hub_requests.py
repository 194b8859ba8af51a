"""The hub simulator's answers to topology, sub-device login and data requests.

A mixin of HubSimulator (gatewayd/sim/hub.py), which holds the registry, the topology and login
state and the models, and calls these under its lock once a request's envelope passed
(gatewayd/sim/hub_checks.py).
"""

from __future__ import annotations

from typing import Any

from gatewayd.enos.protocol import LOGIN_BATCH_CLIENT_ID
from gatewayd.sim.hub_checks import time_error
from gatewayd.sim.hub_records import Delivery, GatewayState
from gatewayd.sim.login import is_ms_timestamp, sign_matches
from gatewayd.sim.thing_model import ThingModel, invalid_points

Key = tuple[str, str]


class HubRequests:
    """What the hub decides; the state lives in HubSimulator."""

    registry: dict[Key, str]
    require_login: bool
    deny_login: set[Key]
    disabled: set[Key]
    models: ThingModel

    def _event(self, **event: Any) -> None:
        raise NotImplementedError

    def _check_batch(
        self,
        method: Any,
        params: Any,
        flags: tuple[bool, bool],
        state: GatewayState,
        point_codes: dict[str, int],
    ) -> tuple[int, str, list[Delivery]]:
        """Format and time, then permission, of every element; then an injected refusal of a
        point (`Faults.point_codes`); then the model. The first error fails the request."""
        if not isinstance(params, list) or not params:
            return 1206, "Measurepoint post data format error", []
        allow_offline, skip_invalid = flags
        for element in params:
            if not well_formed(element):
                return 1206, "Measurepoint post data format error", []
            key = (element["productKey"], element["deviceKey"])
            if (why := time_error(element["time"])) is not None:
                return 1206, f"Measurepoint post data format error: {key[0]}/{key[1]}: {why}", []
            if self.require_login and not (
                key in state.online
                or (allow_offline and key in state.topology and key not in self.disabled)
            ):
                return 1212, f"No sub-device permission: {key[0]}/{key[1]}", []
        for element in params:
            hits = [point_codes[p] for p in element["measurepoints"] if p in point_codes]
            if hits:
                return hits[0], "simulated refusal of a point", []
        accepted: list[Delivery] = []
        for element in params:
            key = (element["productKey"], element["deviceKey"])
            points = dict(element["measurepoints"])
            if self.models:
                invalid = invalid_points(self.models.get(key[0], {}), points)
                if invalid and not skip_invalid:
                    first = sorted(invalid)[0]
                    return (
                        1204,
                        f"Model validate failed: {key[0]}/{key[1]} point {first!r} "
                        f"{invalid[first]}",
                        [],
                    )
                points = {k: v for k, v in points.items() if k not in invalid}
            accepted.append(Delivery(str(method), key[0], key[1], element["time"], points))
        return 200, "", accepted

    def _signed(self, key: Key, client_id: str, timestamp: str, method: Any, given: Any) -> bool:
        if not self.require_login and key not in self.registry:
            return True  # open mode: any sub-device is welcome
        secret = self.registry.get(key)
        if secret is None or not is_ms_timestamp(timestamp):
            return False
        fields = {
            "clientId": client_id,
            "deviceKey": key[1],
            "productKey": key[0],
            "timestamp": timestamp,
        }
        return sign_matches(fields, secret, method, given)

    def _topo_add(self, body: dict[str, Any], state: GatewayState) -> tuple[int, str, Any]:
        failures, added = [], []
        entries = body.get("params")
        for entry in entries if isinstance(entries, list) else []:
            entry = entry if isinstance(entry, dict) else {}
            key = (str(entry.get("productKey")), str(entry.get("deviceKey")))
            if self._signed(
                key,
                str(entry.get("clientId")),
                str(entry.get("timestamp")),
                entry.get("signMethod"),
                entry.get("sign"),
            ):
                state.topology.add(key)
                added.append(f"{key[0]}/{key[1]}")
            else:
                failures.append(f"{key[0]}/{key[1]}")
        code, message = (1255, f"add topo failure, {failures}") if failures else (200, "")
        self._event(kind="thing.topo.add", code=code, added=added, failed=failures)
        return code, message, {}

    def _login_batch(self, body: dict[str, Any], state: GatewayState) -> tuple[int, str, Any]:
        params = body.get("params")
        params = params if isinstance(params, dict) else {}
        client_id = str(params.get("clientId", LOGIN_BATCH_CLIENT_ID))
        timestamp = str(params.get("timestamp"))
        if not is_ms_timestamp(timestamp):
            message = f"Payload format error: timestamp {timestamp!r} is not epoch milliseconds"
            self._event(kind="combine.login.batch", code=1220, message=message)
            return 1220, message, {}
        logged, failed, reasons = [], [], []
        for entry in params.get("subDevices") or []:
            entry = entry if isinstance(entry, dict) else {}
            key = (str(entry.get("productKey")), str(entry.get("deviceKey")))
            item = {"productKey": key[0], "deviceKey": key[1]}
            if key not in self.registry and self.require_login:
                reason = 705
            elif key not in state.topology:
                reason = 740
            elif key in self.deny_login or not self._signed(
                key, client_id, timestamp, params.get("signMethod"), entry.get("sign")
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
        code, message = (723, "; ".join(reasons)) if failed else (200, "")
        self._event(
            kind="combine.login.batch",
            code=code,
            logged=[f"{d['productKey']}/{d['deviceKey']}" for d in logged],
            failed=reasons,
        )
        return code, message, data


def well_formed(element: Any) -> bool:
    return (
        isinstance(element, dict)
        and isinstance(element.get("productKey"), str)
        and isinstance(element.get("deviceKey"), str)
        and isinstance(element.get("measurepoints"), dict)
        and "time" in element
    )
