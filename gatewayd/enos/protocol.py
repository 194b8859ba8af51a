"""EnOS device MQTT protocol pieces: signing, topics, request envelopes, reply parsing. Pure.

Facts and their sources are in shared/enos-protocol.md; section numbers below refer to it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from gatewayd.errors import ReplyFormatError
from gatewayd.model import QueuedSample

#: §1.1: the Java and Python SDKs send "1.1".
PROTOCOL_VERSION = "1.1"

METHOD_POST_BATCH = "thing.measurepoint.post.batch"
METHOD_RESUME_BATCH = "thing.measurepoint.resume.batch"
METHOD_TOPO_GET = "thing.topo.get"
METHOD_TOPO_ADD = "thing.topo.add"
METHOD_LOGIN_BATCH = "combine.login.batch"
METHOD_DISABLE = "combine.disable"
METHOD_ENABLE = "combine.enable"
METHOD_DELETE = "combine.delete"

CODE_OK = 200
#: §5.1: a sub-device is offline or not connected through this gateway.
CODE_NO_SUB_DEVICE_PERMISSION = 1212
#: §5.1: codes that blame the content of a request; the samples that cause them are isolated.
CONTENT_CODES = frozenset({1008, 1204, 1206, 1220})
#: §4.6: Java's default shared clientId for combine.login.batch.
LOGIN_BATCH_CLIENT_ID = "login.batch"
#: §1.2: what a request topic is suffixed with to make its reply topic.
REPLY_SUFFIX = "_reply"


def sign(fields: dict[str, str], secret: str) -> str:
    """§3.3: sha256 over the sorted name/value pairs with the secret appended; uppercase hex.

    A plain hash, not an HMAC, whatever the method is called.
    """
    content = "".join(f"{name}{fields[name]}" for name in sorted(fields)) + secret
    return hashlib.sha256(content.encode("utf-8")).hexdigest().upper()


@dataclass(frozen=True, slots=True)
class Credentials:
    """What goes into MQTT CONNECT for a device in secure mode 2."""

    client_id: str
    username: str
    password: str


def device_credentials(
    product_key: str, device_key: str, secret: str, timestamp_ms: int, client_id: str | None = None
) -> Credentials:
    """§3.2/§3.3: clientId `<id>|securemode=2,signmethod=sha256,timestamp=<ms>|`, user `dk&pk`."""
    base_id = client_id or device_key
    ts = str(timestamp_ms)
    password = sign(
        {"clientId": base_id, "deviceKey": device_key, "productKey": product_key, "timestamp": ts},
        secret,
    )
    return Credentials(
        client_id=f"{base_id}|securemode=2,signmethod=sha256,timestamp={ts}|",
        username=f"{device_key}&{product_key}",
        password=password,
    )


def measurepoint_topic(product_key: str, device_key: str, method: str) -> str:
    """§2: the request topic for a measurement-point method, under the gateway's keys."""
    suffix = {
        METHOD_POST_BATCH: "post/batch",
        METHOD_RESUME_BATCH: "resume/batch",
    }[method]
    return f"/sys/{product_key}/{device_key}/thing/measurepoint/{suffix}"


def topo_topic(product_key: str, device_key: str, method: str) -> str:
    """§4.1: topology requests go under the gateway's keys."""
    operation = {METHOD_TOPO_GET: "get", METHOD_TOPO_ADD: "add"}[method]
    return f"/sys/{product_key}/{device_key}/thing/topo/{operation}"


def session_topic(product_key: str, device_key: str, method: str) -> str:
    """§4.1: sub-device session topics: login up, enable/disable/delete down."""
    operation = {
        METHOD_LOGIN_BATCH: "login/batch",
        METHOD_DISABLE: "disable",
        METHOD_ENABLE: "enable",
        METHOD_DELETE: "delete",
    }[method]
    return f"/ext/session/{product_key}/{device_key}/combine/{operation}"


def request(request_id: str, method: str, params: Any) -> bytes:
    """§1.1: the common request envelope."""
    body = {"id": request_id, "version": PROTOCOL_VERSION, "method": method, "params": params}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class SubDevice:
    """A sub-device as the topology and login requests need it."""

    product_key: str
    device_key: str
    secret: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.product_key, self.device_key)


def _sub_sign(device: SubDevice, client_id: str, timestamp: str) -> str:
    """§4.2: the §3.3 algorithm over the sub-device's fields and secret."""
    fields = {
        "clientId": client_id,
        "deviceKey": device.device_key,
        "productKey": device.product_key,
        "timestamp": timestamp,
    }
    return sign(fields, device.secret)


def topo_add_params(devices: list[SubDevice], timestamp_ms: int) -> list[dict[str, str]]:
    """§4.3: one signed entry per sub-device; clientId as the Java SDK builds it."""
    ts = str(timestamp_ms)
    out = []
    for device in devices:
        client_id = f"{device.product_key}.{device.device_key}.{ts}"
        out.append(
            {
                "productKey": device.product_key,
                "deviceKey": device.device_key,
                "clientId": client_id,
                "timestamp": ts,
                "signMethod": "sha256",
                "sign": _sub_sign(device, client_id, ts),
            }
        )
    return out


def login_batch_params(devices: list[SubDevice], timestamp_ms: int) -> dict[str, Any]:
    """§4.6: a shared clientId and timestamp, one sign per sub-device."""
    ts = str(timestamp_ms)
    return {
        "clientId": LOGIN_BATCH_CLIENT_ID,
        "timestamp": ts,
        "signMethod": "sha256",
        "subDevices": [
            {
                "productKey": d.product_key,
                "deviceKey": d.device_key,
                "sign": _sub_sign(d, LOGIN_BATCH_CLIENT_ID, ts),
            }
            for d in devices
        ],
    }


def device_keys(items: Any) -> set[tuple[str, str]]:
    """The (productKey, deviceKey) pairs in a list of objects; anything malformed is skipped."""
    keys: set[tuple[str, str]] = set()
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                pk, dk = item.get("productKey"), item.get("deviceKey")
                if isinstance(pk, str) and isinstance(dk, str):
                    keys.add((pk, dk))
    return keys


def _loads(payload: bytes, what: str) -> Any:
    """JSON from the hub, or ReplyFormatError: bad syntax, but also what Python's reader refuses
    on its own terms (integers over 4,300 digits, nesting deeper than the recursion limit)."""
    try:
        return json.loads(payload.decode("utf-8"))  # the protocol is UTF-8, never sniffed
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError are these
        raise ReplyFormatError(f"{what} is not usable JSON: {str(exc)[:200]}") from None


@dataclass(frozen=True, slots=True)
class Command:
    """A downstream command from the hub (§1.4, §4.8)."""

    id: str
    method: str
    params: Any


def parse_command(payload: bytes) -> Command:
    """Read `{id, method, params}` sent by the hub; ReplyFormatError if it is not one."""
    body = _loads(payload, "command")
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        raise ReplyFormatError("command has no method")
    request_id = body.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        raise ReplyFormatError("command has no usable id")
    return Command(str(request_id), body["method"], body.get("params"))


def command_reply(request_id: str, code: int = CODE_OK, message: str = "") -> bytes:
    """§1.4: answer a command on its `_reply` topic."""
    body = {"id": request_id, "code": code, "data": {}, "message": message}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def reply_topic(request_topic: str) -> str:
    """§1.2: replies come on the request topic with `_reply` appended."""
    return request_topic + REPLY_SUFFIX


def is_reply_topic(topic: str) -> bool:
    """§1.2: whether `topic` carries replies (as opposed to requests or commands)."""
    return topic.endswith(REPLY_SUFFIX)


@functools.lru_cache(maxsize=4096)
def _element_head(product_key: str, device_key: str) -> str:
    # A gateway has a fixed set of sub-devices; quoting their keys once, not once per sample,
    # was most of the cost of building a batch.
    return (
        f'{{"productKey":{json.dumps(product_key)},"deviceKey":{json.dumps(device_key)},'
        '"measurepoints":'
    )


def batch_element(sample: QueuedSample) -> str:
    """§2.3: one element of a batch `params` array, as JSON text.

    The points JSON is spliced in exactly as stored, so what the queue holds is what is sent.
    """
    head = _element_head(sample.product_key, sample.device_key)
    return f'{head}{sample.points_json},"time":{int(sample.ts_ms)}}}'


def batch_request(
    request_id: str,
    method: str,
    elements: list[str],
    *,
    allow_offline_sub_device: bool = False,
    skip_invalid_measurepoints: bool = False,
) -> bytes:
    """§2.3: the batch envelope; the two flags are top-level booleans next to `params`."""
    head = (
        f'{{"id":{json.dumps(request_id)},"version":"{PROTOCOL_VERSION}",'
        f'"method":{json.dumps(method)},'
        f'"allowOfflineSubDevice":{json.dumps(allow_offline_sub_device)},'
        f'"skipInvalidMeasurepoints":{json.dumps(skip_invalid_measurepoints)},'
        f'"params":['
    )
    return (head + ",".join(elements) + "]}").encode("utf-8")


#: Bytes of a batch envelope around its elements, with room for a long id; see batch_request.
BATCH_ENVELOPE_BYTES = 200


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply from the hub, matched to its request by `id`."""

    id: str
    code: int
    message: str
    data: Any

    @property
    def ok(self) -> bool:
        return self.code == CODE_OK


def parse_reply(payload: bytes) -> Reply:
    """§1.2: read `{id, code, data?, message?}`; anything else raises ReplyFormatError.

    A reply whose `code` is not an integer is garbage, never a success: deleting queued data on a
    misread reply is the one mistake a store-and-forward gateway must not make.
    """
    body = _loads(payload, "reply")
    if not isinstance(body, dict):
        raise ReplyFormatError("reply is not a JSON object")
    request_id = body.get("id")
    code = body.get("code")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        raise ReplyFormatError("reply has no usable id")
    if isinstance(code, bool) or not isinstance(code, int):
        raise ReplyFormatError(f"reply {request_id} has no integer code")
    message = body.get("message")
    data = body.get("data")
    if isinstance(data, str):
        # §1.2: some hubs send `data` as JSON text; read it when it is an object or array.
        try:
            decoded = json.loads(data)
        except (ValueError, RecursionError):
            decoded = data
        data = decoded if isinstance(decoded, dict | list) else data
    return Reply(
        id=str(request_id),
        code=code,
        message=message if isinstance(message, str) else "",
        data=data,
    )
