"""echoswarm.wire: the 32-byte frame header — round trips (property-based), every validation
error with its own exception and a message that says what is wrong, and FrameTemplate."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echoswarm import wire

U64 = st.integers(0, 2**64 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
FLAGS = st.sampled_from([0, wire.FLAG_STATS_REQUEST, wire.FLAG_STATS_REPLY, wire.KNOWN_FLAGS])


def test_header_layout_is_the_contract() -> None:
    raw = wire.encode_header(
        0x01020304, seq=5, intended_send_ns=-6, sent_ns=7, flags=wire.FLAG_STATS_REPLY
    )
    assert len(raw) == wire.HEADER_SIZE == 32
    assert raw[0:2] == b"ES"
    assert raw[2] == 1
    assert raw[3] == 0b10
    assert raw[4:8] == bytes([4, 3, 2, 1])  # little-endian u32
    assert struct.unpack("<Qqq", raw[8:]) == (5, -6, 7)


@given(size=st.integers(32, 5000), seq=U64, intended=I64, sent=I64, flags=FLAGS)
def test_build_parse_round_trip(size: int, seq: int, intended: int, sent: int, flags: int) -> None:
    frame = wire.build_frame(size, seq=seq, intended_send_ns=intended, sent_ns=sent, flags=flags)
    assert len(frame) == size
    header, payload = wire.parse_frame(frame)
    assert header == wire.Header(flags, size - 32, seq, intended, sent)
    assert header.frame_size == size
    assert bytes(payload) == wire.pattern(size - 32)
    assert wire.read_stamps(frame) == (seq, intended, sent)
    assert header.is_stats_request == bool(flags & 1)
    assert header.is_stats_reply == bool(flags & 2)


@given(payload=st.binary(max_size=2048), seq=U64, flags=FLAGS)
def test_explicit_payload_round_trip(payload: bytes, seq: int, flags: int) -> None:
    frame = wire.build_frame(32 + len(payload), seq=seq, flags=flags, payload=payload)
    header, body = wire.parse_frame(frame)
    assert (header.seq, header.flags, bytes(body)) == (seq, flags, payload)


@pytest.mark.parametrize("size", [32, 33, 3200, 480_032, 4 * 1024 * 1024])
def test_sizes_from_header_only_to_megabytes(size: int) -> None:
    frame = wire.build_frame(size, seq=1)
    assert len(frame) == size
    assert wire.parse_frame(frame)[0].length == size - 32


def test_pattern_is_deterministic_and_not_trivial() -> None:
    assert wire.pattern(0) == b""
    assert wire.pattern(300) == wire.pattern(300)
    assert wire.pattern(300)[:251] == bytes(range(251))
    assert wire.pattern(300)[251:] == bytes(range(49))


def good(size: int = 40) -> bytearray:
    return bytearray(wire.build_frame(size, seq=3))


@pytest.mark.parametrize(
    "buf, error, words",
    [
        (b"", wire.ShortBuffer, "need 32 header bytes, got 0"),
        (bytes(good()[:31]), wire.ShortBuffer, "got 31"),
        (b"XS" + bytes(good()[2:]), wire.BadMagic, "bad magic b'XS'"),
        (b"ES\x02" + bytes(good()[3:]), wire.BadVersion, "unsupported frame version 2"),
        (b"ES\x01\x04" + bytes(good()[4:]), wire.BadFlags, "unknown flag bits 0x04"),
        (b"ES\x01\x80" + bytes(good()[4:]), wire.BadFlags, "0x80"),
        (bytes(good())[:-1], wire.ShortBuffer, "declares 8 payload bytes, only 7 present"),
        (bytes(good()) + b"!", wire.LengthMismatch, "declares 8 payload bytes, got 9"),
    ],
)
def test_each_validation_error_is_specific_and_clear(
    buf: bytes, error: type[wire.FrameError], words: str
) -> None:
    with pytest.raises(error) as info:
        wire.parse_frame(buf)
    assert words in str(info.value)
    assert isinstance(info.value, wire.FrameError) and isinstance(info.value, ValueError)


@given(junk=st.binary(max_size=64))
def test_parse_never_fails_with_anything_but_frame_error(junk: bytes) -> None:
    try:
        wire.parse_frame(junk)
    except wire.FrameError:
        pass


def test_decode_header_checks_only_the_header() -> None:
    header = wire.decode_header(good(100)[:32])
    assert header.length == 68 and header.seq == 3


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"frame_size": 31}, wire.FrameError, "smaller than the 32-byte header"),
        ({"frame_size": 40, "payload": b"abc"}, wire.LengthMismatch, "payload is 3 bytes"),
        ({"frame_size": 40, "flags": 0x10}, wire.BadFlags, "unknown flag bits 0x10"),
        ({"frame_size": 40, "seq": -1}, wire.FrameError, "out of range"),
        ({"frame_size": 40, "sent_ns": 2**63}, wire.FrameError, "out of range"),
    ],
)
def test_building_an_invalid_frame_is_refused(
    kwargs: dict[str, int], error: type[wire.FrameError], words: str
) -> None:
    with pytest.raises(error) as info:
        wire.build_frame(**kwargs)  # type: ignore[arg-type]
    assert words in str(info.value)


def test_encode_header_rejects_lengths_beyond_u32() -> None:
    with pytest.raises(wire.FrameError, match="outside 0..4294967295"):
        wire.encode_header(2**32)
    with pytest.raises(wire.FrameError):
        wire.encode_header(-1)


@given(
    size=st.integers(32, 4096),
    stamps=st.lists(st.tuples(U64, I64, I64), min_size=1, max_size=5),
    late=I64,
)
def test_frame_template_stamps_without_touching_the_body(
    size: int, stamps: list[tuple[int, int, int]], late: int
) -> None:
    template = wire.FrameTemplate(size, flags=wire.FLAG_STATS_REQUEST)
    for seq, intended, sent in stamps:
        buf = template.stamp(seq, intended, sent)
        assert len(buf) == size
        header, payload = wire.parse_frame(buf)
        assert (header.seq, header.intended_send_ns, header.sent_ns) == (seq, intended, sent)
        assert header.flags == wire.FLAG_STATS_REQUEST
        assert bytes(payload) == wire.pattern(size - 32) == template.payload()
    buf = template.restamp_sent(late)
    assert wire.read_stamps(buf) == (stamps[-1][0], stamps[-1][1], late)


def test_frame_template_with_own_payload() -> None:
    template = wire.FrameTemplate(36, payload=b"abcd")
    assert bytes(template.stamp(1, 2, 3)[32:]) == b"abcd"
    with pytest.raises(wire.LengthMismatch):
        wire.FrameTemplate(37, payload=b"abcd")
