"""The checks the hub applies to every request before it reads its content, and the simulator's
control messages. Pure.

A request is refused, with the first code that applies, when it is too large (1008 at 512 KiB,
§2.5), empty (1251), not a JSON object with an `id` (1220), of a `version` the hub does not know
(1220; §1.1 lists "1.0" and "1.1"), or when its `method` is not the topic's (1260). In a batch, an
element `time` must be epoch milliseconds: a seconds-range value is refused (1206) rather than
stored in January 1970.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_REQUEST_BYTES = 512 * 1024
VERSIONS = frozenset({"1.0", "1.1"})
#: Below this an epoch-ms `time` would be before March 1973: it is a seconds value.
MIN_MS_TIME = 10**11

#: The request topic's operation (after `/sys/{pk}/{dk}/thing/` or `/ext/session/{pk}/{dk}/
#: combine/`) -> the method a request on it must carry.
METHODS = {
    "measurepoint/post/batch": "thing.measurepoint.post.batch",
    "measurepoint/resume/batch": "thing.measurepoint.resume.batch",
    "topo/get": "thing.topo.get",
    "topo/add": "thing.topo.add",
    "login/batch": "combine.login.batch",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    message: str


def check_request(operation: str, payload: bytes) -> tuple[dict[str, Any] | None, Refusal | None]:
    """Parse a request and check its envelope: (body, None) or (body if readable, refusal)."""
    try:
        body = json.loads(payload) if payload else None
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        body = None
    if len(payload) >= MAX_REQUEST_BYTES:
        return body, Refusal(1008, f"Msg size is too large ({len(payload)} bytes), discard")
    if not payload:
        return None, Refusal(1251, "Payload is empty")
    request_id = body.get("id") if body is not None else None
    if body is None or not isinstance(request_id, str) or not request_id:
        return body, Refusal(1220, "Payload format error: not a JSON object with a string id")
    version = body.get("version")
    if version not in VERSIONS:
        return body, Refusal(1220, f"Payload format error: version {version!r} is not 1.0/1.1")
    expected = METHODS.get(operation)
    if body.get("method") != expected:
        return body, Refusal(
            1260, f"Methods not consistent: {body.get('method')!r} on a {expected} topic"
        )
    return body, None


def time_error(value: Any) -> str | None:
    """Why an element `time` is not epoch milliseconds, or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"time {value!r} is not an integer"
    if value < MIN_MS_TIME:
        return f"time {value} is in the seconds range: send epoch milliseconds"
    return None


#: Control keys and what their values must be (see `parse_control`).
_CONTROL_KEYS = ("reply_code", "drop", "garbage", "delay_s", "point_codes", "kick")


def parse_control(payload: bytes) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """A control message: (fault changes, device to kick); ValueError saying what is wrong.

    `reply_code` an integer code (100-99999), `drop`/`garbage` true or false, `delay_s` a number
    of seconds (0-3600), `point_codes` {point id: code}, `kick` ["productKey", "deviceKey"].
    """
    try:
        command = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(command, dict) or not command:
        raise ValueError(f"expected a JSON object with some of {', '.join(_CONTROL_KEYS)}")
    unknown = sorted(set(command) - set(_CONTROL_KEYS))
    if unknown:
        raise ValueError(f"unknown keys {unknown}; known: {', '.join(_CONTROL_KEYS)}")
    changes: dict[str, Any] = {}
    for key in ("drop", "garbage"):
        if key in command:
            if not isinstance(command[key], bool):
                raise ValueError(f"{key} must be true or false, not {command[key]!r}")
            changes[key] = command[key]
    if "reply_code" in command:
        changes["reply_code"] = _code(command["reply_code"], "reply_code")
    if "delay_s" in command:
        delay = command["delay_s"]
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 3600:
            raise ValueError(f"delay_s must be a number of seconds 0-3600, not {delay!r}")
        changes["delay_s"] = float(delay)
    if "point_codes" in command:
        codes = command["point_codes"]
        if not isinstance(codes, dict):
            raise ValueError(f"point_codes must be an object {{point: code}}, not {codes!r}")
        changes["point_codes"] = {str(k): _code(v, f"point_codes.{k}") for k, v in codes.items()}
    kick = command.get("kick")
    if kick is not None and not (
        isinstance(kick, list) and len(kick) == 2 and all(isinstance(k, str) and k for k in kick)
    ):
        raise ValueError(f'kick must be ["productKey", "deviceKey"], not {kick!r}')
    return changes, (kick[0], kick[1]) if kick else None


def _code(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 99999:
        raise ValueError(f"{name} must be an integer code like 200 or 1212, not {value!r}")
    return value
