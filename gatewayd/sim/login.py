"""How the hub checks a device's MQTT CONNECT (enos-protocol.md §3.2, §3.3). Pure.

The real hub reads the secure-mode-2 clientId `<id>|securemode=2,signmethod=...,timestamp=<ms>|`,
the username `<deviceKey>&<productKey>` and the password, a digest of those fields with the
device's secret appended, and refuses the connection when any of it is wrong. The simulator's
authenticating front (gatewayd/sim/front.py) parses the first packet with `parse_connect` and
asks `check_login` before the broker behind it sees a byte.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Key = tuple[str, str]

#: CONNACK return codes of MQTT 3.1.1 (§3.2.2.3).
ACCEPTED = 0
UNACCEPTABLE_PROTOCOL = 1
IDENTIFIER_REJECTED = 2
BAD_USERNAME_OR_PASSWORD = 4
NOT_AUTHORISED = 5

#: A secrets key that stands for any device (`sim hub --gateway-secret` without a config).
ANY_DEVICE: Key = ("*", "*")

CONNECT = 0x10
#: The largest CONNECT the front reads; a device's CONNECT is a few hundred bytes.
MAX_CONNECT_BYTES = 64 * 1024

_CLIENT_ID = re.compile(r"^(?P<base>[^|]{1,64})\|(?P<extra>[^|]*)\|$")
_DIGESTS: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "sha256": hashlib.sha256,
    "sha1": hashlib.sha1,
    "md5": hashlib.md5,
}


class MalformedPacket(ValueError):
    """The bytes are not an MQTT CONNECT packet."""


@dataclass(frozen=True, slots=True)
class ConnectPacket:
    """The fields of CONNECT the hub looks at."""

    protocol_name: str
    protocol_level: int
    client_id: str
    username: str | None
    password: bytes | None
    keepalive_s: int


@dataclass(frozen=True, slots=True)
class LoginVerdict:
    """What the hub answers a CONNECT: a CONNACK return code, for whom, and why."""

    code: int
    device: Key | None
    reason: str

    @property
    def accepted(self) -> bool:
        return self.code == ACCEPTED


def remaining_length(data: bytes) -> tuple[int, int] | None:
    """Decode the fixed header's variable-length integer after byte 0.

    Returns (length, header bytes) or None when more bytes are needed; MalformedPacket if the
    integer runs over its four bytes.
    """
    value, shift = 0, 0
    for index in range(1, 5):
        if index >= len(data):
            return None
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    raise MalformedPacket("remaining length longer than four bytes")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise MalformedPacket("CONNECT ends early")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def blob(self) -> bytes:
        return self.take(self.u16())

    def text(self) -> str:
        try:
            return self.blob().decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPacket("a CONNECT string is not UTF-8") from None


def parse_connect(packet: bytes) -> ConnectPacket:
    """Read a whole CONNECT packet (fixed header included); MalformedPacket if it is not one."""
    if not packet or packet[0] != CONNECT:
        raise MalformedPacket("the first packet is not CONNECT")
    header = remaining_length(packet)
    if header is None or header[0] + header[1] != len(packet):
        raise MalformedPacket("CONNECT length does not match its header")
    reader = _Reader(packet[header[1] :])
    name = reader.text()
    level = reader.u8()
    flags = reader.u8()
    keepalive = reader.u16()
    if level == 5:  # MQTT 5 puts properties here; the hub speaks 3.1.1 only
        return ConnectPacket(name, level, "", None, None, keepalive)
    client_id = reader.text()
    if flags & 0x04:  # will flag: will topic and will message come first
        reader.text()
        reader.blob()
    username = reader.text() if flags & 0x80 else None
    password = reader.blob() if flags & 0x40 else None
    return ConnectPacket(name, level, client_id, username, password, keepalive)


def digest_sign(fields: Mapping[str, str], secret: str, method: str) -> str | None:
    """§3.3 with the named digest (`sha256`, `sha1`, `md5`, or their `hmac*` aliases, any case);
    uppercase hex, or None for a method the hub does not know."""
    digest = _DIGESTS.get(method.lower().removeprefix("hmac"))
    if digest is None:
        return None
    content = "".join(f"{name}{fields[name]}" for name in sorted(fields)) + secret
    return digest(content.encode("utf-8")).hexdigest().upper()


def sign_matches(fields: Mapping[str, str], secret: str, method: object, given: object) -> bool:
    """Does `given` sign `fields` with `secret` by `method`? Hex case does not matter (§3.3)."""
    if not isinstance(method, str) or not isinstance(given, str):
        return False
    expected = digest_sign(fields, secret, method)
    return expected is not None and expected == given.upper()


def is_ms_timestamp(text: str) -> bool:
    """A login timestamp: decimal epoch milliseconds (a seconds-range value is not one)."""
    return text.isdigit() and int(text) >= 10**11


def check_login(connect: ConnectPacket, secrets: Mapping[Key, str] | None) -> LoginVerdict:
    """The hub's verdict on a CONNECT; `secrets=None` accepts any well-formed login unchecked."""
    if connect.protocol_name != "MQTT" or connect.protocol_level != 4:
        return LoginVerdict(
            UNACCEPTABLE_PROTOCOL,
            None,
            f"protocol {connect.protocol_name} level {connect.protocol_level}: MQTT 3.1.1 only",
        )
    device = _username_device(connect.username)
    if secrets is None:
        return LoginVerdict(ACCEPTED, device, "not checked: the simulator knows no secret")
    if device is None:
        return LoginVerdict(
            BAD_USERNAME_OR_PASSWORD,
            None,
            f"username {connect.username!r} is not deviceKey&productKey",
        )
    match = _CLIENT_ID.match(connect.client_id)
    if match is None:
        return LoginVerdict(
            IDENTIFIER_REJECTED,
            device,
            f"clientId {connect.client_id!r} is not <id>|securemode=2,signmethod=..,timestamp=..|",
        )
    extra = dict(item.partition("=")[::2] for item in match["extra"].split(",") if item)
    if extra.get("securemode") != "2":
        return LoginVerdict(
            NOT_AUTHORISED, device, f"securemode {extra.get('securemode')!r}: only 2 is simulated"
        )
    timestamp = extra.get("timestamp", "")
    if not is_ms_timestamp(timestamp):
        return LoginVerdict(
            NOT_AUTHORISED, device, f"timestamp {timestamp!r} is not epoch milliseconds"
        )
    secret = secrets.get(device, secrets.get(ANY_DEVICE))
    if secret is None:
        return LoginVerdict(NOT_AUTHORISED, device, "unknown device")
    if connect.password is None:
        return LoginVerdict(NOT_AUTHORISED, device, "no password")
    fields = {
        "clientId": match["base"],
        "deviceKey": device[1],
        "productKey": device[0],
        "timestamp": timestamp,
    }
    method = extra.get("signmethod", "")
    if digest_sign(fields, secret, method) is None:
        return LoginVerdict(NOT_AUTHORISED, device, f"signmethod {method!r} is not known")
    try:
        password = connect.password.decode("ascii")
    except UnicodeDecodeError:
        password = ""
    if not sign_matches(fields, secret, method, password):
        return LoginVerdict(NOT_AUTHORISED, device, "sign check failed (wrong device secret?)")
    return LoginVerdict(ACCEPTED, device, "sign checked")


def _username_device(username: str | None) -> Key | None:
    if not username or username.count("&") != 1:
        return None
    device_key, product_key = username.split("&")
    return (product_key, device_key) if device_key and product_key else None


def connack(code: int) -> bytes:
    """A CONNACK with no session present and the given return code."""
    return bytes((0x20, 0x02, 0x00, code))
