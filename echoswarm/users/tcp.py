"""Raw TCP users: framed echo over one socket, persistent streams and short-lived connections.

``TcpUser`` (abstract) runs one of two patterns, chosen by the class attribute ``pattern``:

* ``"stream"`` — a persistent connection carrying a paced (``--mode paced``) or closed-loop
  (``--mode pingpong``) stream of ``--frame-bytes`` frames; rows ``connect`` and ``msg``. The
  connection is reopened after ``--stream-seconds`` / ``--stream-messages`` if set.
* ``"churn"`` — what seed S003's client meant to do: connect, ``--round-trips`` send/receive
  round trips, close; rows ``connect``, ``msg`` (one per round trip) and ``session`` (connect to
  close). ``--connections-per-user`` connections per user, then the user stops (0 = until the
  test stops).

Frames are the 32-byte header of :mod:`echoswarm.wire` plus a fixed payload, stamped in place
(:class:`~echoswarm.wire.FrameTemplate`); replies are read with exact-length reads (the echo
must be as long as the frame) into one preallocated buffer and compared byte for byte.
"""

from __future__ import annotations

import socket

import locust  # noqa: F401  (gevent monkey-patching before any socket use)
from locust import task

from echoswarm.streams.core import check_echo
from echoswarm.streams.failures import ConnectionLost
from echoswarm.users.base import EchoUser
from echoswarm.users.scheduler import send_nowait
from echoswarm.wire import FrameTemplate


def parse_target(target: str, default_port: int) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); raises ValueError with a reason."""
    host, sep, port = target.rpartition(":")
    if not sep:
        return target, default_port
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"bad port in target {target!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"port {number} outside 1..65535 in {target!r}")
    return host or "127.0.0.1", number


class TcpLink:
    """One framed echo connection (implements ``gevent_stream.Link``)."""

    __slots__ = ("sock", "nbytes", "_template", "_expect", "_buf", "_view", "_got")

    def __init__(self, sock: socket.socket, frame_bytes: int) -> None:
        self.sock = sock
        self.nbytes = frame_bytes
        self._template = FrameTemplate(frame_bytes)
        # The reply must equal the frame with its own stamps: write the reply's stamps into
        # this copy and compare whole buffers (one memcmp instead of slicing).
        self._expect = bytearray(self._template.stamp(0, 0, 0))
        self._buf = bytearray(frame_bytes)
        self._view = memoryview(self._buf)
        self._got = 0  # bytes of the current reply read so far (a read can be resumed)

    def send(self, seq: int, intended_ns: int, sent_ns: int) -> None:
        # send() first: gevent's sendall() asks the kernel for SO_SNDBUF on every call (one
        # extra syscall per message); a frame nearly always fits in one send on a live socket.
        buf = self._template.stamp(seq, intended_ns, sent_ns)
        n = self.sock.send(buf)
        if n < len(buf):
            self.sock.sendall(memoryview(buf)[n:])

    def send_nowait(self, seq: int, intended_ns: int, sent_ns: int) -> memoryview | None:
        buf = self._template.stamp(seq, intended_ns, sent_ns)
        return send_nowait(self.sock, buf)

    def send_rest(self, rest: memoryview) -> None:
        self.sock.sendall(rest)

    def recv(self) -> tuple[int, int, int, str | None]:
        view = self._view
        size = self.nbytes
        recv_into = self.sock.recv_into
        got = self._got
        while got < size:
            n = recv_into(view[got:], size - got)
            if not n:
                self._got = 0
                raise ConnectionLost(
                    "connection closed by peer mid-frame" if got else "connection closed by peer"
                )
            got += n
            self._got = got
        self._got = 0
        return check_echo(self._buf, self._expect)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class TcpUser(EchoUser):
    """Abstract TCP echo user; set ``pattern`` ("stream" or "churn") in a subclass."""

    abstract = True
    transport = "tcp"
    pattern = "stream"

    def on_start(self) -> None:
        super().on_start()
        self.target: tuple[str, int] | None = None
        self.target_error = ""
        try:
            self.target = parse_target(self.opts.tcp_target, 7777)
        except ValueError as exc:
            self.target_error = f"bad --tcp-target: {exc}"

    @task
    def run_pattern(self) -> None:
        if self.pattern == "churn":
            self.churn_once()
        else:
            self.stream_once()

    def churn_once(self) -> None:
        """connect → K round trips → close, as S003's client meant (rows connect/msg/session)."""
        self.short_connection("msg", self.opts.round_trips)

    def open_link(self) -> TcpLink:
        if self.target is None:
            raise ConnectionLost(self.target_error)
        sock = socket.create_connection(self.target, timeout=self.opts.reply_timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        return TcpLink(sock, self.opts.frame_bytes)
