"""One relayed connection: connect upstream, and carry bytes both ways on the emulated path.

For every accepted client connection (times from :class:`~echoswarm.wan.path.Lane`):

* **Handshake.** The kernel completes the client's TCP handshake with the relay at once — no
  user-space program can hold back a SYN-ACK — so the relay emulates the path's handshake
  around it: it opens the upstream connection one-way-delay after the accept (the SYN's trip),
  takes the client's side as established one-way-delay after the upstream connect succeeded
  (the SYN-ACK's trip back), and treats every byte the client sent before that as sent at
  that moment. So on a new connection the first reply reaches the client ≥ 2 × rtt after its
  ``connect()`` began, exactly as over a real path (one round trip for the handshake, one for
  the request); only the raw ``connect()`` call itself returns early. Protocols that finish
  their own connect with an exchange (WebSocket's upgrade, HTTP/2's SETTINGS under gRPC) see
  the full handshake time in their connect. A refused or timed-out upstream connect becomes a
  reset towards the client one-way-delay later.
* **Bytes.** Each direction (a :class:`Pipe`) reads chunks, asks the lane when each arrives,
  queues them, and writes them out at that time (never earlier). Releases of one direction are
  non-decreasing, so jitter never reorders bytes.
* **Half-close and reset.** EOF from one side travels behind its bytes and becomes
  ``shutdown(SHUT_WR)`` on the other side once they are written; the connection closes when
  both directions have ended. A reset from one side (or a failed write to it) travels the same
  way and becomes a reset (``SO_LINGER`` 0 + close) of the other side.
* **Memory.** A direction holding ``queue_bytes`` stops reading its source until it has
  drained to half of that; TCP flow control then slows the sender, as a full path would.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from echoswarm.wan.path import Lane, Path
from echoswarm.wan.reactor import Reactor
from echoswarm.wan.spec import Address, format_address, resolve

log = logging.getLogger("echoswarm.wan")


class Host(Protocol):
    """What a connection uses of the relay that accepted it (``relay.Relay``), named here so
    the connection does not import the relay that imports it."""

    reactor: Reactor
    path: Path
    piece_bytes: int
    queue_bytes: int
    connect_timeout_ns: int
    bytes_in: list[int]
    conns: set[Conn]


RECV_BYTES = 65536
_LINGER_RST = struct.pack("ii", 1, 0)
_EOF = b""  # queue markers; data chunks are never empty
_RESET = bytearray()


# The kernel's receive timestamp (SO_TIMESTAMPNS, a CLOCK_REALTIME timespec on each recvmsg):
# a chunk's delay counts from when it reached this host, not from when the relay got round to
# reading it, so the relay's own wake-up latency (and a busy machine's run queue) is absorbed
# by the emulated delay instead of added to it. The constant is Linux's (asm-generic) value.
SO_TIMESTAMPNS = 35
_ANC_BYTES = socket.CMSG_SPACE(16)
_TIMESPEC = struct.Struct("@qq")
MAX_TIMESTAMP_AGE_NS = 10_000_000_000


def enable_timestamps(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        pass  # not Linux: delays count from the read


def _arrival(anc: list[tuple[int, int, bytes]], real_now: int, now: int) -> int:
    """The monotonic time a chunk arrived (from its SO_TIMESTAMPNS), never after ``now``."""
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(raw)
            age = real_now - (sec * 1_000_000_000 + nsec)
            if 0 < age < MAX_TIMESTAMP_AGE_NS:  # a clock step would give nonsense: ignore it
                return now - age
    return now


def _abort(sock: socket.socket) -> None:
    """Close ``sock`` with a reset (RST) rather than a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass
    sock.close()


class Pipe:
    """One direction of one relayed connection: src socket → queue (due, bytes) → dst socket."""

    __slots__ = (
        "conn",
        "lane",
        "src",
        "dst",
        "queue",
        "queued",
        "unsent",
        "marker",
        "reading",
        "src_ended",
        "scheduled",
        "done",
        "discard",
        "reset",
    )

    def __init__(self, conn: Conn, lane: Lane) -> None:
        self.conn = conn
        self.lane = lane
        self.src: socket.socket | None = None
        self.dst: socket.socket | None = None
        self.queue: deque[tuple[int, bytes | bytearray]] = deque()
        self.queued = 0  # bytes read from src and not yet accepted by dst's kernel
        self.unsent = bytearray()  # released, but dst's send buffer was full
        self.marker: bytes | bytearray | None = None  # released EOF/RESET waiting for unsent
        self.reading = False
        self.src_ended = False  # EOF or reset read from src
        self.scheduled = False  # a release is in the reactor's heap
        self.done = False  # EOF delivered to dst
        self.discard = False  # dst is gone: drop whatever comes
        self.reset = False  # a reset from src is on its way to dst

    # -- reading -------------------------------------------------------------------------------

    def start(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self._resume()

    def _resume(self) -> None:
        if not self.reading and not self.src_ended and self.src is not None:
            self.reading = True
            self.conn.relay.reactor.add_reader(self.src.fileno(), self.on_readable)

    def _pause(self) -> None:
        if self.reading and self.src is not None:
            self.reading = False
            self.conn.relay.reactor.remove_reader(self.src.fileno())

    def on_readable(self) -> None:
        src = self.src
        if src is None:
            return
        try:
            data, anc, _, _ = src.recvmsg(RECV_BYTES, _ANC_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.src_reset()
            return
        if anc:  # the realtime clock first: an age read early errs towards a later arrival
            real = time.time_ns()
            now = _arrival(anc, real, time.monotonic_ns())
        else:
            now = time.monotonic_ns()
        if not data:
            self._pause()
            self.src_ended = True
            self._enqueue(self.lane.due(now, 0), _EOF)
            return
        if self.discard:
            return
        n = len(data)
        relay = self.conn.relay
        relay.bytes_in[self.lane.link is relay.path.up] += n
        piece = relay.piece_bytes
        if n <= piece:
            self._enqueue(self.lane.due(now, n), data)
        else:
            view = memoryview(data)
            for off in range(0, n, piece):
                part = bytes(view[off : off + piece])
                self._enqueue(self.lane.due(now, len(part)), part)
        self.queued += n
        if self.queued >= relay.queue_bytes:
            self._pause()

    def src_reset(self) -> None:
        """The source reset the connection (or failed): the reset travels to the other side."""
        if self.reset:
            return
        self.reset = True
        self._pause()
        self.src_ended = True
        other = self.conn.other(self)
        other.sink()  # nothing more can be delivered to this source
        self._enqueue(self.lane.due(time.monotonic_ns(), 0), _RESET)

    def sink(self) -> None:
        """The destination is gone: drop queued bytes, accept and drop new ones."""
        self.discard = True
        self.queue.clear()
        self.unsent.clear()
        self.queued = 0
        if self.dst is not None:
            self.conn.relay.reactor.remove_writer(self.dst.fileno())
        self._resume()

    # -- releasing -----------------------------------------------------------------------------

    def _enqueue(self, due: int, item: bytes | bytearray) -> None:
        self.queue.append((due, item))
        if not self.scheduled:
            self.scheduled = True
            self.conn.relay.reactor.call_at(due, self.release)

    def release(self) -> None:
        """Write out everything due by now (called by the reactor at the head's due time)."""
        self.scheduled = False
        if self.conn.closed:
            return
        q = self.queue
        now = time.monotonic_ns()
        out: list[bytes | bytearray] = []
        marker = None
        while q and q[0][0] <= now:
            item = q.popleft()[1]
            if not item:  # _EOF or _RESET: handled after the data before it
                marker = item
                break
            out.append(item)
        if out and not self.discard:
            self._write(out[0] if len(out) == 1 else b"".join(out))
        if marker is not None:
            if marker is _RESET:
                self.conn.abort(self)
                return
            self.marker = marker
            if not self.unsent:
                self._finish()
        if q and not self.conn.closed:  # a reset may still follow an EOF
            self.scheduled = True
            self.conn.relay.reactor.call_at(q[0][0], self.release)

    def _write(self, data: bytes | bytearray) -> None:
        dst = self.dst
        assert dst is not None
        if self.unsent:
            self.unsent += data
            return
        try:
            sent = dst.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.dst_failed()
            return
        if sent < len(data):
            self.unsent += memoryview(data)[sent:]
            self.conn.relay.reactor.add_writer(dst.fileno(), self.on_writable)
        self._sent(sent)

    def _sent(self, n: int) -> None:
        self.queued -= n
        if not self.reading and self.queued * 2 < self.conn.relay.queue_bytes:
            self._resume()

    def on_writable(self) -> None:
        dst = self.dst
        if dst is None or not self.unsent:
            return
        try:
            sent = dst.send(self.unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.dst_failed()
            return
        del self.unsent[:sent]
        self._sent(sent)
        if not self.unsent:
            self.conn.relay.reactor.remove_writer(dst.fileno())
            if self.marker is not None:
                self._finish()

    def dst_failed(self) -> None:
        """Writing to dst failed (it reset): drop this direction; the reset travels back."""
        self.sink()
        self.conn.other(self).src_reset()

    def _finish(self) -> None:
        """Deliver the EOF: half-close towards dst."""
        self.done = True
        if self.dst is not None:
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.conn.maybe_close()


class Conn:
    """One client connection and its upstream connection."""

    __slots__ = ("relay", "target", "client", "server", "up", "down", "closed", "_deadline")

    def __init__(self, relay: Host, client: socket.socket, target: Target) -> None:
        self.relay = relay
        self.target = target
        self.client = client
        self.server: socket.socket | None = None
        self.up = Pipe(self, relay.path.lane(upstream=True))
        self.down = Pipe(self, relay.path.lane(upstream=False))
        self.closed = False
        self._deadline = 0
        # The client's SYN reaches the server side one way later.
        relay.reactor.call_at(self.up.lane.one_way(time.monotonic_ns()), self._connect)

    def other(self, pipe: Pipe) -> Pipe:
        return self.down if pipe is self.up else self.up

    def _connect(self) -> None:
        if self.closed:
            return
        family, sockaddr = self.target.family, self.target.sockaddr
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self._refused(exc.errno or errno.EMFILE)
            return
        self.server = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        enable_timestamps(sock)
        err = sock.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS):
            self._refused(err)
            return
        self.relay.reactor.add_writer(sock.fileno(), self._connected)
        self._deadline = time.monotonic_ns() + self.relay.connect_timeout_ns
        self.relay.reactor.call_at(self._deadline, self._connect_timeout)

    def _connect_timeout(self) -> None:
        if not self.closed and self._deadline:
            self._refused(errno.ETIMEDOUT)

    def _connected(self) -> None:
        server = self.server
        if self.closed or server is None:
            return
        self.relay.reactor.remove_writer(server.fileno())
        err = server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._refused(err)
            return
        self._deadline = 0
        now = time.monotonic_ns()
        # The SYN-ACK's trip back: the client could not have sent anything before this; and
        # the server, whose accept() came early, could not have before the client's ACK came.
        client_established = self.down.lane.one_way(now)
        self.up.lane.not_before_ns = client_established
        self.down.lane.not_before_ns = self.up.lane.one_way(client_established)
        self.up.start(self.client, server)
        self.down.start(server, self.client)

    def _refused(self, err: int) -> None:
        """The upstream connect failed: the client learns it (a reset) one way later."""
        self._deadline = 0
        log.info("connect to %s failed: %s", self.target.text, errno.errorcode.get(err, err))
        if self.server is not None:
            self.relay.reactor.forget(self.server.fileno())
            self.server.close()
            self.server = None
        self.relay.reactor.call_at(self.down.lane.one_way(time.monotonic_ns()), self._reset_all)

    def _reset_all(self) -> None:
        self.abort(None)

    def abort(self, _pipe: Pipe | None) -> None:
        """A reset reached the far side: reset both sockets and forget the connection."""
        self._close(_abort)

    def maybe_close(self) -> None:
        if self.up.done and self.down.done:
            self._close(socket.socket.close)

    def _close(self, how: Callable[[socket.socket], None]) -> None:
        if self.closed:
            return
        self.closed = True
        reactor = self.relay.reactor
        for sock in (self.client, self.server):
            if sock is not None and sock.fileno() >= 0:
                reactor.forget(sock.fileno())
                how(sock)
        for pipe in (self.up, self.down):
            pipe.queue.clear()
            pipe.unsent.clear()
            pipe.src = pipe.dst = None
        self.relay.conns.discard(self)


class Target:
    """A resolved upstream address."""

    __slots__ = ("addr", "text", "family", "sockaddr")

    def __init__(self, addr: Address) -> None:
        self.addr = addr
        self.text = format_address(addr)
        self.family, self.sockaddr = resolve(addr)
