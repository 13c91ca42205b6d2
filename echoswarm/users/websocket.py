"""WebSocket users on websocket-client: long-lived sessions and short-lived requests.

``WebSocketUser`` (abstract) runs one of two patterns, chosen by the class attribute
``pattern``:

* ``"session"`` — one long-lived connection carrying a paced or ping-pong stream (``--mode``);
  rows ``connect`` (TCP + HTTP upgrade) and ``msg``. Reopened after ``--stream-seconds`` /
  ``--stream-messages`` if set.
* ``"request"`` — a fresh connection per request (seed S001's parallel mode): connect, one
  message, its reply, close; rows ``connect``, ``roundtrip`` (send → reply) and ``session``
  (connect → closed).

Class attributes pick the message kind: ``text = True`` sends text messages (an ASCII rendering
of the frame: 16 hex digits each of seq, intended and sent time, then ASCII filler up to
``--frame-bytes`` characters, at least 48), otherwise binary frames of :mod:`echoswarm.wire`.
``stats = True`` sends STATS request frames (for ``python -m servers ws --work stats``) and
checks each reply is a STATS reply with the same seq and timestamps whose JSON ``bytes`` equals
the payload size (and ``max``/``min``/``mean``/``median``, when present, the payload's figures).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
from typing import Any

import locust  # noqa: F401  (gevent monkey-patching before any socket use)
import websocket
from locust import task

from echoswarm.measure import Timer
from echoswarm.streams.core import check_echo
from echoswarm.streams.failures import ConnectionLost, ws_describe
from echoswarm.users.base import EchoUser
from echoswarm.users.scheduler import send_nowait
from echoswarm.wire import (
    FLAG_STATS_REQUEST,
    HEADER_SIZE,
    FrameError,
    FrameTemplate,
    parse_frame,
    pattern,
)

OPCODE_BINARY = websocket.ABNF.OPCODE_BINARY
OPCODE_TEXT = websocket.ABNF.OPCODE_TEXT
TEXT_HEADER = 48
_STAMPS = struct.Struct("<Qqq")  # seq, intended_send_ns, sent_ns at frame offset 8
_TEXT_FILL = bytes(range(0x21, 0x7F))  # printable ASCII


class WsLink:
    """One WebSocket session as ``gevent_stream.Stream`` drives it."""

    def __init__(self, ws: Any, frame_bytes: int, *, text: bool, stats: bool) -> None:
        self.ws = ws
        self.text = text
        self.stats = stats
        if text:
            size = max(frame_bytes, TEXT_HEADER)
            body = _TEXT_FILL * (size // len(_TEXT_FILL) + 1)
            self._text_body = body[: size - TEXT_HEADER].decode("ascii")
            self.nbytes = size
        else:
            flags = FLAG_STATS_REQUEST if stats else 0
            self._template = FrameTemplate(frame_bytes, flags=flags)
            self._expect = bytearray(self._template.stamp(0, 0, 0))
            self.nbytes = frame_bytes
            if stats:
                self._stats = expected_stats(frame_bytes - HEADER_SIZE)
        self._send_binary = ws.send_bytes

    def send(self, seq: int, intended_ns: int, sent_ns: int) -> None:
        if self.text:
            self.ws.send_text(f"{seq:016x}{intended_ns:016x}{sent_ns:016x}{self._text_body}")
        else:
            self._send_binary(self._template.stamp(seq, intended_ns, sent_ns))

    def recv(self) -> tuple[int, int, int, str | None]:
        try:
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            raise TimeoutError from None
        if opcode == OPCODE_BINARY:
            if self.text:
                return -1, 0, 0, "expected a text reply, got binary"
        elif opcode == OPCODE_TEXT:
            if not self.text:
                return -1, 0, 0, "expected a binary reply, got text"
            return self._check_text(data.decode("utf-8", "replace"))
        else:  # a close frame (websocket-client has answered it already)
            raise ConnectionLost("connection closed by peer")
        if self.stats:
            return self._check_stats(data)
        if len(data) < HEADER_SIZE:
            return -1, 0, 0, f"echo length {len(data)} != sent {self.nbytes}"
        return check_echo(data, self._expect)

    def _check_text(self, data: str) -> tuple[int, int, int, str | None]:
        try:
            seq, intended, sent = (int(data[i : i + 16], 16) for i in (0, 16, 32))
        except ValueError:
            return -1, 0, 0, "text echo has a garbled header"
        if data[TEXT_HEADER:] != self._text_body or len(data) != self.nbytes:
            return seq, intended, sent, "text echo differs from what was sent"
        return seq, intended, sent, None

    def _check_stats(self, data: bytes) -> tuple[int, int, int, str | None]:
        try:
            header, payload = parse_frame(data)
        except FrameError as exc:
            return -1, 0, 0, f"bad STATS reply frame: {type(exc).__name__}"
        if not header.is_stats_reply:
            return header.seq, header.intended_send_ns, header.sent_ns, "not a STATS reply"
        return (
            header.seq,
            header.intended_send_ns,
            header.sent_ns,
            check_stats_json(bytes(payload), self._stats),
        )

    def close(self) -> None:
        _close_session(self.ws)


class WsBinaryLink:
    """The binary echo data path driven directly over the session's socket.

    websocket-client does the handshake and the close; messages bypass its pure-Python framing
    (``ABNF.format``, per-message masking of the whole payload, byte-wise reads), which costs
    more than the socket I/O itself. The client frame is built once, already masked: RFC 6455
    wants a mask key per frame so that scripts cannot make a browser's bytes predictable to a
    proxy; a load generator talking to its own echo server has no such attacker, so one random
    key per connection is used and only the 24 stamped header bytes are re-masked per message.
    Server frames are read through one buffer; pings are answered, a close frame ends the
    stream, a fragmented message is reassembled.
    """

    def __init__(self, ws: Any, frame_bytes: int) -> None:
        self.ws = ws
        self.sock = ws.sock
        self.nbytes = size = frame_bytes
        self._key = os.urandom(4)
        self._key24 = int.from_bytes(self._key * 6, "little")  # stamps start at offset 8
        plain = bytes(FrameTemplate(frame_bytes).stamp(0, 0, 0))
        head = bytes([0x80 | OPCODE_BINARY]) + _length_field(size, masked=True) + self._key
        self._out = bytearray(head + _mask(plain, self._key))
        self._out_view = memoryview(self._out)
        self._stamp_at = len(head) + 8
        self._expect = bytearray(plain)
        self._buf = bytearray(max(1 << 16, 4 * (size + 16)))
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def send(self, seq: int, intended_ns: int, sent_ns: int) -> None:
        at = self._stamp_at
        stamps = int.from_bytes(_STAMPS.pack(seq, intended_ns, sent_ns), "little")
        self._out[at : at + 24] = (stamps ^ self._key24).to_bytes(24, "little")
        n = self.sock.send(self._out)
        if n < len(self._out):
            self.sock.sendall(self._out_view[n:])

    def send_nowait(self, seq: int, intended_ns: int, sent_ns: int) -> memoryview | None:
        at = self._stamp_at
        stamps = int.from_bytes(_STAMPS.pack(seq, intended_ns, sent_ns), "little")
        self._out[at : at + 24] = (stamps ^ self._key24).to_bytes(24, "little")
        return send_nowait(self.sock, self._out)  # (no restamp until the rest is sent)

    def send_rest(self, rest: memoryview) -> None:
        self.sock.sendall(rest)

    def recv(self) -> tuple[int, int, int, str | None]:
        pieces: list[bytes] = []
        kind = 0  # opcode of the message being assembled
        while True:
            fin, opcode, data = self._frame()
            if opcode in (OPCODE_BINARY, OPCODE_TEXT, 0):  # (part of) a data message
                kind = opcode or kind
                if fin and not pieces:
                    break
                pieces.append(data)
                if fin:
                    data = b"".join(pieces)
                    break
            elif opcode == 0x9:  # ping: answer with a pong carrying the same data
                pong = bytes([0x8A]) + _length_field(len(data), masked=True) + self._key
                self.sock.sendall(pong + _mask(data, self._key))
            elif opcode == 0x8:
                raise ConnectionLost("connection closed by peer")
        if kind != OPCODE_BINARY:
            return -1, 0, 0, "expected a binary reply, got text"
        if len(data) != self.nbytes:
            return -1, 0, 0, f"echo length {len(data)} != sent {self.nbytes}"
        return check_echo(data, self._expect)

    def _frame(self) -> tuple[bool, int, bytes]:
        """One server frame: (fin, opcode, payload)."""
        self._fill(2)
        b0, b1 = self._buf[self._start], self._buf[self._start + 1]
        length = b1 & 0x7F
        head = 2
        if length == 126:
            head = 4
        elif length == 127:
            head = 10
        if b1 & 0x80:
            raise ConnectionLost("protocol error: the server masked a frame")
        self._fill(head)
        if head == 4:
            length = int.from_bytes(self._buf[self._start + 2 : self._start + 4], "big")
        elif head == 10:
            length = int.from_bytes(self._buf[self._start + 2 : self._start + 10], "big")
        self._fill(head + length)
        at = self._start + head
        data = bytes(self._buf[at : at + length])
        self._start = at + length
        return bool(b0 & 0x80), b0 & 0x0F, data

    def _fill(self, n: int) -> None:
        """Make ``n`` unread bytes available in the buffer (reading from the socket)."""
        while self._end - self._start < n:
            if self._start + n > len(self._buf):  # no room after the unread bytes: compact
                unread = self._end - self._start
                if n > len(self._buf):
                    self._buf.extend(bytes(n - len(self._buf)))
                    self._view = memoryview(self._buf)
                self._buf[:unread] = self._buf[self._start : self._end]
                self._start, self._end = 0, unread
            got = self.sock.recv_into(self._view[self._end :])
            if not got:
                raise ConnectionLost("connection closed by peer")
            self._end += got

    def close(self) -> None:
        _close_session(self.ws)


def _length_field(n: int, *, masked: bool) -> bytes:
    bit = 0x80 if masked else 0
    if n < 126:
        return bytes([bit | n])
    if n < 1 << 16:
        return bytes([bit | 126]) + n.to_bytes(2, "big")
    return bytes([bit | 127]) + n.to_bytes(8, "big")


def _mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the repeating 4-byte ``key`` (RFC 6455 masking)."""
    reps = len(data) // 4 + 1
    keyed = int.from_bytes((key * reps)[: len(data)], "little")
    return (int.from_bytes(data, "little") ^ keyed).to_bytes(len(data), "little")


def _close_session(ws: Any) -> None:
    # Say goodbye (a close frame) but do not wait for the server's answer: the stream is
    # over, and a dead or stalled server must not hold the user up.
    try:
        if ws.connected:
            ws.send_close()
    except Exception:  # the connection may already be broken; nothing more to do
        pass
    try:
        ws.shutdown()
    except Exception:
        pass


def expected_stats(n: int) -> dict[str, float]:
    """The figures a STATS server must report for our payload of ``n`` pattern bytes."""
    data = pattern(n)
    if not data:
        return {"bytes": 0}
    return {
        "bytes": n,
        "max": max(data),
        "min": min(data),
        "mean": sum(data) / n,
        "median": float(statistics.median(data)),
    }


def check_stats_json(payload: bytes, expect: dict[str, float]) -> str | None:
    """None if ``payload`` is a JSON object agreeing with ``expect``, else why not."""
    try:
        got = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return "STATS reply payload is not JSON"
    if not isinstance(got, dict):
        return "STATS reply JSON is not an object"
    if got.get("bytes") != expect["bytes"]:
        return "STATS reply bytes differs from the payload size"
    for key in ("max", "min", "mean", "median"):
        if key in got:
            value = got[key]
            if not isinstance(value, int | float) or abs(value - expect[key]) > 1e-6 * max(
                1.0, abs(expect[key])
            ):
                return f"STATS reply {key} is wrong"
    return None


class WebSocketUser(EchoUser):
    """Abstract WebSocket echo user; set ``pattern`` ("session" or "request") in a subclass."""

    abstract = True
    transport = "ws"
    pattern = "session"
    text = False
    stats = False

    @task
    def run_pattern(self) -> None:
        if self.pattern == "request":
            self.request_once()
        else:
            self.session_once()

    def session_once(self) -> None:
        """One long-lived session carrying a paced or ping-pong stream until it ends."""
        self.stream_once()

    def request_once(self) -> None:
        """connect → one request → its reply → close (rows connect/roundtrip/session)."""
        self.short_connection("roundtrip", 1)

    def connect(self) -> tuple[WsLink | WsBinaryLink, int, Timer] | None:
        """:meth:`EchoUser.connect`, typed: subclasses may use the session (``link.ws``)."""
        opened = super().connect()
        if opened is None:
            return None
        link, conn_id, timer = opened
        assert isinstance(link, WsLink | WsBinaryLink)
        return link, conn_id, timer

    def open_link(self) -> WsLink | WsBinaryLink:
        """TCP connect + HTTP upgrade (the ``connect`` row)."""
        ws = websocket.create_connection(
            self.opts.ws_url,
            timeout=self.opts.reply_timeout_s,
            enable_multithread=False,
            skip_utf8_validation=True,
            sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        ws.settimeout(None)
        if self.text or self.stats:
            return WsLink(ws, self.opts.frame_bytes, text=self.text, stats=self.stats)
        return WsBinaryLink(ws, self.opts.frame_bytes)

    def describe_error(self, exc: BaseException) -> str:
        return ws_describe(exc)
