"""Replies that break Python's JSON reader in other ways than bad syntax are garbage too."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from gatewayd.enos.protocol import parse_command, parse_reply
from gatewayd.enos.transport import disconnect_reason
from gatewayd.errors import ReplyFormatError

HUGE = "9" * 5000
DEEP = b"[" * 100_000 + b"]" * 100_000

MONSTERS = {
    "5,000-digit id": f'{{"id":{HUGE},"code":200}}'.encode(),
    "5,000-digit code": f'{{"id":"1","code":{HUGE}}}'.encode(),
    "100,000-deep data": b'{"id":"1","code":200,"data":' + DEEP + b"}",
    "100,000-deep body": DEEP,
}


@pytest.mark.parametrize("payload", MONSTERS.values(), ids=MONSTERS.keys())
def test_a_monstrous_reply_is_a_format_error(payload: bytes) -> None:
    with pytest.raises(ReplyFormatError):
        parse_reply(payload)


@pytest.mark.parametrize("payload", MONSTERS.values(), ids=MONSTERS.keys())
def test_a_monstrous_command_is_a_format_error(payload: bytes) -> None:
    with pytest.raises(ReplyFormatError):
        parse_command(payload)


def test_data_sent_as_text_too_deep_to_read_stays_text() -> None:
    """`data` may come as JSON text (§1.2); if it cannot be read it is kept as it came."""
    reply = parse_reply(b'{"id":"1","code":200,"data":"' + DEEP + b'"}')
    assert (reply.code, reply.data) == (200, DEEP.decode())


def test_a_dropped_connection_is_not_called_an_unspecified_error() -> None:
    """paho turns a socket the broker closed into 'Unspecified error'; the log says what
    happened, and a reason the broker did send is passed on as it was given."""
    lost = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
    assert "Unspecified" not in disconnect_reason(False, lost)
    assert "without a reason" in disconnect_reason(False, lost)
    too_large = ReasonCode(PacketTypes.DISCONNECT, identifier=0x95)
    assert disconnect_reason(True, too_large) == "broker said: Packet too large"
