"""What a refusal from the hub means for the operator: a short reason and what to check. Pure.

The hub refuses the gateway's own CONNECT with an MQTT 3.1.1 return code (a wrong secret is
"not authorised", enos-protocol.md §3), and a sub-device login per device inside a 723 reply to
`combine.login.batch` (§4.6, §5.1). Neither fixes itself by retrying, so the log must say which
setting to check.
"""

from __future__ import annotations

import re

Key = tuple[str, str]

#: paho reports a 3.1.1 CONNACK code as the MQTT 5 reason code it maps to; both are keys here.
_CONNACK: dict[int, tuple[str, str]] = {
    1: ("unacceptable_protocol", "the hub does not speak MQTT 3.1.1 here: check mqtt.port"),
    2: ("identifier_rejected", "the hub refused the clientId: check gateway.device_key"),
    3: ("server_unavailable", "the hub is not taking devices now; retrying"),
    4: (
        "bad_username_or_password",
        "check gateway.product_key and gateway.device_key",
    ),
    5: ("not_authorised", "check gateway.device_secret"),
}
_MQTT5_TO_311 = {132: 1, 133: 2, 136: 3, 134: 4, 135: 5}

#: §5.1 login codes -> the likely cause, as the operator can act on it.
LOGIN_CAUSES: dict[int, str] = {
    705: "unknown to the hub: create the device there or fix its product_key/device_key",
    723: "disabled on the hub",
    740: "not in this gateway's topology (topo.add refused: check its device_secret)",
    742: "sign check failed: check its device_secret",
    746: "its product requires certificate (TLS) login",
    770: "dynamic activation is not allowed for its product",
    771: "a sub-device may not connect directly",
}


def connack_refusal(code: int) -> tuple[str, str]:
    """(reason, hint) for a refused CONNECT, from the 3.1.1 code or paho's MQTT 5 mapping."""
    code = _MQTT5_TO_311.get(code, code)
    return _CONNACK.get(code, (f"refused_{code}", "the hub refused the login"))


def login_failure_code(message: str, key: Key) -> int | None:
    """The code the hub gave one device in a batch login's message (`pk/dk: 742; ...`), if any."""
    product_key, device_key = key
    for name in (f"{product_key}/{device_key}", device_key):
        found = re.search(rf"(?<![\w.-]){re.escape(name)}\W{{1,4}}(\d{{3,4}})\b", message)
        if found:
            return int(found.group(1))
    return None


def login_refusal(code: int, message: str, key: Key) -> str:
    """The park reason for a device whose login failed: its own code and the likely cause."""
    own = login_failure_code(message, key)
    if own is None:
        return f"login refused: {code} {message}".strip()
    cause = LOGIN_CAUSES.get(own, "see the hub's message")
    return f"login refused: {own} {cause}"
