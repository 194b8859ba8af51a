"""The echo watch hands on every byte that is not the echo, and strips exactly the echo."""

from __future__ import annotations

import itertools

from hypothesis import assume, given
from hypothesis import strategies as st

from gatewayd.acquire.local_echo import EchoWatch

REQUEST = bytes.fromhex("010300000002c40b")


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@given(st.binary(max_size=40), st.lists(st.integers(0, 60), max_size=8))
def test_with_local_echo_the_echo_and_only_the_echo_is_taken_off(
    answer: bytes, cuts: list[int]
) -> None:
    watch = EchoWatch(strip=True)
    watch.begin(REQUEST)
    out = b"".join(watch.feed(p) for p in pieces(REQUEST + answer, cuts))
    assert out == answer and watch.echoes == 1


@given(st.binary(min_size=1, max_size=40), st.lists(st.integers(0, 60), max_size=8))
def test_bytes_that_are_no_echo_all_reach_the_books(data: bytes, cuts: list[int]) -> None:
    assume(not REQUEST.startswith(data))  # the echo's beginning, cut short: held as echo
    if data.startswith(REQUEST):
        data = b"\x00" + data
    for strip in (True, False):
        watch = EchoWatch(strip=strip)
        watch.begin(REQUEST)
        assert b"".join(watch.feed(p) for p in pieces(data, cuts)) == data
        assert watch.echoes == 0


def test_without_local_echo_the_echo_is_noticed_and_handed_on() -> None:
    watch = EchoWatch(strip=False)
    watch.begin(REQUEST)
    assert watch.feed(REQUEST[:3]) + watch.feed(REQUEST[3:] + b"\x01") == REQUEST + b"\x01"
    assert watch.echoes == 1
