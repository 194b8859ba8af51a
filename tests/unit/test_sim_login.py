"""The hub simulator's CONNECT check (gatewayd/sim/login.py): parsing and the sign verdict."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.enos.protocol import device_credentials
from gatewayd.sim.login import (
    ANY_DEVICE,
    ConnectPacket,
    MalformedPacket,
    check_login,
    connack,
    digest_sign,
    is_ms_timestamp,
    parse_connect,
    remaining_length,
)

TS = 1700000000000
keys = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=20)
secrets_ = st.text(min_size=1, max_size=40)


def _str(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def encode_connect(
    client_id: str,
    username: str | None,
    password: bytes | None,
    will: tuple[str, bytes] | None = None,
    level: int = 4,
) -> bytes:
    """An independent CONNECT encoder (MQTT 3.1.1 §3.1), to check the parser against."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    payload = _str(client_id)
    if will is not None:
        flags |= 0x04
        payload += _str(will[0]) + len(will[1]).to_bytes(2, "big") + will[1]
    if username is not None:
        payload += _str(username)
    if password is not None:
        payload += len(password).to_bytes(2, "big") + password
    body = _str("MQTT") + bytes((level, flags)) + (60).to_bytes(2, "big") + payload
    length, out = len(body), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes((0x10,)) + bytes(out) + body


def packet_for(pk: str, dk: str, secret: str, ts: int = TS) -> ConnectPacket:
    creds = device_credentials(pk, dk, secret, ts)
    return parse_connect(encode_connect(creds.client_id, creds.username, creds.password.encode()))


@given(
    st.text(max_size=100),
    st.none() | st.text(max_size=100),
    st.none() | st.binary(max_size=300),
    st.none() | st.tuples(st.text(max_size=20), st.binary(max_size=200)),
)
def test_parse_connect_reads_back_what_was_encoded(
    client_id: str, username: str | None, password: bytes | None, will: tuple[str, bytes] | None
) -> None:
    packet = parse_connect(encode_connect(client_id, username, password, will))
    assert (packet.client_id, packet.username, packet.password) == (client_id, username, password)
    assert (packet.protocol_name, packet.protocol_level, packet.keepalive_s) == ("MQTT", 4, 60)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30\x00", b"\x10\x05\x00\x04MQ", b"\x10\xff\xff\xff\xff\x01", b"\x10\x02\x00\x04"],
)
def test_what_is_not_a_connect_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse_connect(data)


def test_remaining_length_needs_more_bytes_or_decodes() -> None:
    assert remaining_length(b"\x10") is None
    assert remaining_length(b"\x10\x80") is None
    assert remaining_length(b"\x10\x80\x01") == (128, 3)


@given(keys, keys, secrets_)
def test_the_sdk_login_is_accepted_with_its_secret(pk: str, dk: str, secret: str) -> None:
    verdict = check_login(packet_for(pk, dk, secret), {(pk, dk): secret})
    assert verdict.accepted and verdict.device == (pk, dk)


@given(keys, keys, secrets_, secrets_)
def test_another_secret_is_not_authorised(pk: str, dk: str, secret: str, other: str) -> None:
    verdict = check_login(packet_for(pk, dk, other), {(pk, dk): secret})
    assert verdict.accepted is (other == secret)
    if other != secret:
        assert verdict.code == 5 and "sign" in verdict.reason


def test_the_refusals_and_their_codes() -> None:
    secrets = {("gwPK", "gw001"): "s"}
    good = packet_for("gwPK", "gw001", "s")
    assert check_login(packet_for("gwPK", "gw002", "s"), secrets).reason == "unknown device"
    assert check_login(ConnectPacket("MQTT", 5, "", None, None, 60), secrets).code == 1
    no_user = ConnectPacket("MQTT", 4, good.client_id, None, good.password, 60)
    assert check_login(no_user, secrets).code == 4
    bare_id = ConnectPacket("MQTT", 4, "gw001", good.username, good.password, 60)
    assert check_login(bare_id, secrets).code == 2
    seconds = packet_for("gwPK", "gw001", "s", ts=TS // 1000)
    assert check_login(seconds, secrets).code == 5 and "milliseconds" in seconds_reason(seconds)
    mode3 = ConnectPacket(
        "MQTT",
        4,
        good.client_id.replace("securemode=2", "securemode=3"),
        good.username,
        good.password,
        60,
    )
    assert check_login(mode3, secrets).code == 5
    no_password = ConnectPacket("MQTT", 4, good.client_id, good.username, None, 60)
    assert check_login(no_password, secrets).reason == "no password"


def seconds_reason(packet: ConnectPacket) -> str:
    return check_login(packet, {("gwPK", "gw001"): "s"}).reason


def test_open_mode_and_any_device() -> None:
    stranger = packet_for("xPK", "x1", "whatever")
    verdict = check_login(stranger, None)
    assert verdict.accepted and "not checked" in verdict.reason
    assert check_login(stranger, {ANY_DEVICE: "whatever"}).accepted
    assert not check_login(stranger, {ANY_DEVICE: "other"}).accepted


def test_sign_methods_and_case() -> None:
    fields = {
        "clientId": "123456",
        "deviceKey": "test",
        "productKey": "654321",
        "timestamp": "1548753362502",
    }
    # enos-protocol.md §3.3's test vector
    expected = "B99032D49C706F7B27B22AB5CD2DD3C56A31E1BCBBC83BA0A2A6BB3272FBB166"
    assert digest_sign(fields, "abcdefg", "sha256") == expected
    assert digest_sign(fields, "abcdefg", "HmacSHA256") == expected
    assert digest_sign(fields, "abcdefg", "md5") != expected
    assert digest_sign(fields, "abcdefg", "sha512") is None


def test_ms_timestamps() -> None:
    assert is_ms_timestamp("1700000000000") and is_ms_timestamp("2524608000000")
    assert not is_ms_timestamp("1700000000") and not is_ms_timestamp("17e11")
    assert not is_ms_timestamp("") and not is_ms_timestamp("-1700000000000")


def test_connack_bytes() -> None:
    assert connack(5) == b"\x20\x02\x00\x05"
