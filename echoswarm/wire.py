"""The 32-byte echoswarm frame header used on TCP and WebSocket (see DESIGN.md).

Layout, little-endian::

    0  2s  magic b"ES"
    2  B   version (1)
    3  B   flags: bit0 STATS request, bit1 STATS reply, other bits must be 0
    4  I   payload length (bytes after the header)
    8  Q   seq
    16 q   intended_send_ns
    24 q   sent_ns

Pure functions and one small frame template; no I/O, no clocks. "Frame size" everywhere means
header + payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"ES"
VERSION = 1
HEADER_SIZE = 32
FLAG_STATS_REQUEST = 0x01
FLAG_STATS_REPLY = 0x02
KNOWN_FLAGS = FLAG_STATS_REQUEST | FLAG_STATS_REPLY
MAX_PAYLOAD = 0xFFFF_FFFF

_HEADER = struct.Struct("<2sBBIQqq")
_STAMPS = struct.Struct("<Qqq")  # seq, intended_send_ns, sent_ns at offset 8
_SENT = struct.Struct("<q")  # sent_ns at offset 24
assert _HEADER.size == HEADER_SIZE


class FrameError(ValueError):
    """A buffer is not a valid echoswarm frame; the message says why."""


class ShortBuffer(FrameError):
    """Fewer bytes than the header (or the header's declared length) needs."""


class BadMagic(FrameError):
    """The first two bytes are not b"ES"."""


class BadVersion(FrameError):
    """A version this code does not speak."""


class BadFlags(FrameError):
    """Reserved flag bits are set."""


class LengthMismatch(FrameError):
    """The header's payload length disagrees with the bytes present."""


@dataclass(frozen=True, slots=True)
class Header:
    """A decoded frame header."""

    flags: int
    length: int
    seq: int
    intended_send_ns: int
    sent_ns: int

    @property
    def frame_size(self) -> int:
        """Total bytes of the frame this header starts (header included)."""
        return HEADER_SIZE + self.length

    @property
    def is_stats_request(self) -> bool:
        return bool(self.flags & FLAG_STATS_REQUEST)

    @property
    def is_stats_reply(self) -> bool:
        return bool(self.flags & FLAG_STATS_REPLY)


def encode_header(
    length: int, seq: int = 0, intended_send_ns: int = 0, sent_ns: int = 0, flags: int = 0
) -> bytes:
    """Return the 32 header bytes; raises FrameError for out-of-range fields."""
    if not 0 <= length <= MAX_PAYLOAD:
        raise FrameError(f"payload length {length} outside 0..{MAX_PAYLOAD}")
    if flags & ~KNOWN_FLAGS or flags < 0:
        raise BadFlags(f"unknown flag bits 0x{flags:02x} (known: 0x{KNOWN_FLAGS:02x})")
    try:
        return _HEADER.pack(MAGIC, VERSION, flags, length, seq, intended_send_ns, sent_ns)
    except struct.error as exc:
        raise FrameError(f"header field out of range: {exc}") from None


def build_frame(
    frame_size: int,
    seq: int = 0,
    intended_send_ns: int = 0,
    sent_ns: int = 0,
    flags: int = 0,
    payload: bytes | None = None,
) -> bytes:
    """Build a whole frame of exactly ``frame_size`` bytes (header included).

    Without ``payload`` the body is a deterministic byte pattern (so echoes can be checked);
    with one, its length must be ``frame_size - 32``.
    """
    if frame_size < HEADER_SIZE:
        raise FrameError(f"frame size {frame_size} is smaller than the {HEADER_SIZE}-byte header")
    length = frame_size - HEADER_SIZE
    if payload is None:
        payload = pattern(length)
    elif len(payload) != length:
        raise LengthMismatch(
            f"payload is {len(payload)} bytes but a {frame_size}-byte frame carries {length}"
        )
    return encode_header(length, seq, intended_send_ns, sent_ns, flags) + bytes(payload)


def pattern(length: int) -> bytes:
    """A deterministic, non-trivial payload: bytes 0..250 repeating (251 is prime)."""
    block = bytes(range(251))
    reps, rest = divmod(length, 251)
    return block * reps + block[:rest]


def decode_header(buf: bytes | bytearray | memoryview) -> Header:
    """Decode and validate the first 32 bytes of ``buf`` (the payload is not checked)."""
    if len(buf) < HEADER_SIZE:
        raise ShortBuffer(f"need {HEADER_SIZE} header bytes, got {len(buf)}")
    magic, version, flags, length, seq, intended, sent = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise BadMagic(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise BadVersion(f"unsupported frame version {version}, expected {VERSION}")
    if flags & ~KNOWN_FLAGS:
        raise BadFlags(f"unknown flag bits 0x{flags:02x} (known: 0x{KNOWN_FLAGS:02x})")
    return Header(flags, length, seq, intended, sent)


def parse_frame(buf: bytes | bytearray | memoryview) -> tuple[Header, memoryview]:
    """Validate a whole frame (header + exactly ``length`` payload bytes) and split it."""
    header = decode_header(buf)
    have = len(buf) - HEADER_SIZE
    if have < header.length:
        raise ShortBuffer(f"header declares {header.length} payload bytes, only {have} present")
    if have > header.length:
        raise LengthMismatch(f"header declares {header.length} payload bytes, got {have}")
    return header, memoryview(buf)[HEADER_SIZE:]


def read_stamps(buf: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """Fast path: (seq, intended_send_ns, sent_ns) of a frame known to be well formed."""
    seq, intended, sent = _STAMPS.unpack_from(buf, 8)
    return seq, intended, sent


class FrameTemplate:
    """A reusable frame buffer: stamp seq/timestamps into a copy without rebuilding the body.

    Load generators send the same payload millions of times; stamping 24 bytes into a
    preallocated bytearray is far cheaper than concatenating header + payload per message.
    """

    __slots__ = ("frame_size", "_buf", "flags")

    def __init__(self, frame_size: int, flags: int = 0, payload: bytes | None = None) -> None:
        self.frame_size = frame_size
        self.flags = flags
        self._buf = bytearray(build_frame(frame_size, flags=flags, payload=payload))

    def stamp(self, seq: int, intended_send_ns: int, sent_ns: int) -> bytearray:
        """Write the three stamps into the shared buffer and return it (valid until next call)."""
        _STAMPS.pack_into(self._buf, 8, seq, intended_send_ns, sent_ns)
        return self._buf

    def restamp_sent(self, sent_ns: int) -> bytearray:
        """Overwrite only sent_ns (taken the instant before handing bytes to the transport)."""
        _SENT.pack_into(self._buf, 24, sent_ns)
        return self._buf

    def payload(self) -> bytes:
        return bytes(self._buf[HEADER_SIZE:])
