"""EnOS device MQTT protocol pieces: signing, topics, request envelopes, reply parsing. Pure.

Facts and their sources are in shared/enos-protocol.md; section numbers below refer to it.
"""

from __future__ import annotations

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

CODE_OK = 200


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


def reply_topic(request_topic: str) -> str:
    """§1.2: replies come on the request topic with `_reply` appended."""
    return request_topic + "_reply"


def batch_element(sample: QueuedSample) -> str:
    """§2.3: one element of a batch `params` array, as JSON text.

    The points JSON is spliced in exactly as stored, so what the queue holds is what is sent.
    """
    return (
        f'{{"productKey":{json.dumps(sample.product_key)},'
        f'"deviceKey":{json.dumps(sample.device_key)},'
        f'"measurepoints":{sample.points_json},"time":{int(sample.ts_ms)}}}'
    )


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
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReplyFormatError(f"reply is not JSON: {exc}") from None
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
        except json.JSONDecodeError:
            decoded = data
        data = decoded if isinstance(decoded, dict | list) else data
    return Reply(
        id=str(request_id),
        code=code,
        message=message if isinstance(message, str) else "",
        data=data,
    )
