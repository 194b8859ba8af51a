"""Replies that break Python's JSON reader in other ways than bad syntax are garbage too."""

from __future__ import annotations

import pytest

from gatewayd.enos.protocol import parse_command, parse_reply
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
