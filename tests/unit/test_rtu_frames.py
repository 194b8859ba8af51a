"""Frames on an RTU line told apart by length and CRC; the ledger that books them per unit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.acquire.line_ledger import Asked, LineLedger
from gatewayd.acquire.rtu_frames import Frame, FrameSplitter, frame_length
from tests.support.rtu_slave import crc16


def answer(unit: int, *words: int) -> bytes:
    adu = bytes([unit, 3, 2 * len(words)]) + b"".join(w.to_bytes(2, "big") for w in words)
    return adu + crc16(adu)


def exception(unit: int, function: int, code: int) -> bytes:
    adu = bytes([unit, function | 0x80, code])
    return adu + crc16(adu)


answers = st.builds(
    lambda unit, words: answer(unit, *words),
    st.integers(1, 247),
    st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125),
)


@given(
    st.lists(
        answers | st.builds(exception, st.integers(1, 247), st.integers(1, 4), st.integers(1, 11)),
        max_size=8,
    ),
    st.lists(st.integers(1, 40), max_size=20),
)
def test_frames_back_to_back_come_out_whole_however_the_bytes_are_cut(
    frames: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(frames)
    splitter = FrameSplitter()
    out: list[Frame | int] = []
    position = 0
    for size in cuts:
        out += splitter.feed(stream[position : position + size])
        position += size
    out += splitter.feed(stream[position:])
    assert [(f.unit, f.pdu) for f in out if isinstance(f, Frame)] == [
        (f[0], f[1:-2]) for f in frames
    ]
    assert [n for n in out if isinstance(n, int)] == []
    assert splitter.pending == 0


@given(st.binary(max_size=300), st.lists(answers, max_size=4))
def test_no_byte_is_lost_and_every_frame_checks(noise: bytes, frames: list[bytes]) -> None:
    splitter = FrameSplitter()
    out = splitter.feed(noise) + splitter.feed(b"".join(frames))
    frame_bytes = sum(len(f.pdu) + 3 for f in out if isinstance(f, Frame))
    noise_bytes = sum(n for n in out if isinstance(n, int))
    assert frame_bytes + noise_bytes + splitter.pending == len(noise) + sum(map(len, frames))


def test_a_noise_byte_before_an_answer_is_noise_not_a_frame() -> None:
    splitter = FrameSplitter()
    assert splitter.feed(b"\x01") == []  # might start a frame: kept until more comes
    out = splitter.feed(answer(1, 1010))
    assert out == [1, Frame(1, 3, bytes([3, 2, 0x03, 0xF2]))]


def test_lengths_follow_the_function_code() -> None:
    assert frame_length(b"\x01", 0) is None
    assert frame_length(b"\x01\x03", 0) is None
    assert frame_length(b"\x01\x03\x04", 0) == 9
    assert frame_length(b"\x01\x83", 0) == 5
    assert frame_length(b"\x01\x06", 0) == 8
    assert frame_length(b"\x01\x03\x00", 0) == 0  # a byte count of 0 answers nothing
    assert frame_length(b"\x01\x42", 0) == 0  # not an answer to anything a master asks


ONE = Asked(3, 0, 1)  # holding 0+1


def test_a_frame_from_another_unit_in_a_window_pays_only_if_the_answer_came() -> None:
    ledger = LineLedger()
    ledger.begin(2, ONE, 0.0)  # unit 2's request times out: it owes
    ledger.end(accepted=False)
    ledger.begin(3, ONE, 1.0)  # a frame labelled 2 comes instead of unit 3's answer
    ledger.received(answer(2, 7), 1.1)
    ledger.end(accepted=False)
    assert {unit: len(owed) for unit, owed in ledger.owed.items()} == {2: 1, 3: 1}
    assert ledger.epoch == {2: 1}  # unexplained, booked against unit 2
    ledger.give_up(3)
    ledger.begin(3, ONE, 2.0)  # now unit 3 answers, and unit 2's late answer comes with it
    paid = ledger.received(answer(2, 7) + answer(3, 8), 2.1)
    ledger.end(accepted=True)
    assert paid
    assert ledger.owed == {}
    assert ledger.late_discarded == 1


def test_a_second_frame_from_the_asked_unit_is_a_stray_of_that_unit() -> None:
    ledger = LineLedger()
    ledger.begin(1, ONE, 0.0)
    ledger.received(answer(1, 5) + answer(1, 5), 0.1)
    window = ledger.end(accepted=False)
    assert window is not None and len(window.own) == 2
    assert ledger.epoch == {1: 1}
    assert ledger.owed == {}


def test_a_copy_of_an_answer_to_another_request_pays_nothing() -> None:
    ledger = LineLedger()
    ledger.begin(1, ONE, 0.0)
    ledger.received(answer(1, 1000), 0.1)  # holding 0's answer
    ledger.end(accepted=True)
    ledger.begin(1, Asked(3, 10, 1), 0.2)  # holding 10 times out: owed
    ledger.end(accepted=False)
    assert not ledger.received(answer(1, 1000), 0.6)  # holding 0's answer again: a copy
    assert ledger.epoch == {1: 1} and len(ledger.owed[1]) == 1
    assert ledger.received(answer(1, 1010), 1.0)  # the late answer itself pays
    assert ledger.owed == {} and ledger.late_discarded == 1


def test_an_answer_of_the_wrong_size_pays_nothing() -> None:
    ledger = LineLedger()
    ledger.begin(1, Asked(3, 0, 2), 0.0)
    ledger.end(accepted=False)
    assert not ledger.received(answer(1, 5), 0.5)  # one register where two are owed
    assert len(ledger.owed[1]) == 1


def test_a_frame_inside_a_frame_still_arriving_is_not_taken() -> None:
    inner = answer(2, 0x1234)
    outer = answer(
        1, *(int.from_bytes((inner + b"\x00")[i : i + 2], "big") for i in range(0, 8, 2))
    )
    splitter = FrameSplitter()
    out = []
    for i in range(0, len(outer), 3):  # in pieces, as a converter delivers them
        out += splitter.feed(outer[i : i + 3], now=i / 1000)
    assert out == [Frame(1, 3, outer[1:-2])]


def test_bytes_that_never_become_a_frame_are_noise_after_a_quiet_spell() -> None:
    splitter = FrameSplitter(stale_s=0.1)
    assert splitter.feed(b"\x01\x03\xff", now=1.0) == []  # a 260-byte frame may be coming
    assert splitter.feed(answer(1, 7), now=1.01) == []  # ... so it waits
    assert splitter.expire(1.05) == []
    assert splitter.expire(1.2) == [3, Frame(1, 3, answer(1, 7)[1:-2])]


def test_the_requests_own_echo_is_no_answer_even_where_it_parses_as_one() -> None:
    """A local-echo adapter hands the request back. Coils 768+17: its bytes parse as a whole
    answer with 3 bytes of bits (before: taken as the answer of a dead unit, 3 of 3 polls)."""
    asked = Asked(1, 768, 17)
    ledger = LineLedger()
    ledger.begin(1, asked, 0.0)
    echo = asked.request_frame(1)
    for i in range(0, len(echo), 2):  # in pieces
        ledger.received(echo[i : i + 2], 0.01)
    window = ledger.end(accepted=False)
    assert window is not None and window.own == [] and window.noise == 8
    assert ledger.echoes == 1 and len(ledger.owed[1]) == 1 and ledger.epoch == {}


@pytest.mark.parametrize(
    ("unit", "asked", "registers"),
    [
        (1, Asked(3, 0, 2), (7, 8)),  # 01 03 04 ...: starts as the request 01 03 00 00 does
        (83, Asked(3, 512, 1), (0,)),  # 53 03 02 00 00 01 88: the request's first 7 bytes
        (1, Asked(3, 1536, 3), (0x0000, 0x0305, 0x4355)),  # the request's 8 bytes, then more
    ],
)
def test_an_answer_that_starts_like_the_request_is_the_answer(
    unit: int, asked: Asked, registers: tuple[int, ...]
) -> None:
    """Found by a sixth adversarial round: taking the request's bytes off the start of every
    window ate real answers that begin with them (unit 83, holding 512 = 0: never readable)."""
    ledger = LineLedger()
    ledger.begin(unit, asked, 0.0)
    reply = answer(unit, *registers)
    for i in range(0, len(reply), 2):
        ledger.received(reply[i : i + 2], 0.01)
    window = ledger.end(accepted=True)
    assert window is not None and [f.pdu for f in window.own] == [reply[1:-2]]
    assert window.noise == 0 and ledger.echoes == 0 and ledger.owed == {}


def test_a_copy_of_the_first_of_many_answers_is_still_recognised() -> None:
    ledger = LineLedger()
    for address in range(0, 120, 10):  # twelve reads, each its own answer
        ledger.begin(1, Asked(3, address, 1), float(address))
        ledger.received(answer(1, 1000 + address), float(address))
        ledger.end(accepted=True)
    ledger.begin(1, Asked(3, 120, 1), 200.0)
    ledger.received(answer(1, 1000), 200.1)  # the first answer again
    window = ledger.end(accepted=False)
    assert window is not None and window.copies and not window.own
