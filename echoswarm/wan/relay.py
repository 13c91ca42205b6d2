"""The relay process's core: listening sockets, accepting, and the loop that serves them.

:class:`Relay` binds one listening socket per ``(listen, target)`` pair, accepts clients (each
becomes a :class:`~echoswarm.wan.conn.Conn`, which emulates the handshake and carries the bytes —
see :mod:`.conn`), and runs the :class:`~echoswarm.wan.reactor.Reactor` until stopped. All pairs
share one :class:`~echoswarm.wan.path.Path`: one link per direction, like one access line.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable, Sequence

from echoswarm.wan.conn import Conn, Target, enable_timestamps
from echoswarm.wan.path import Path
from echoswarm.wan.reactor import Reactor
from echoswarm.wan.spec import Address, WanSpec, resolve

log = logging.getLogger("echoswarm.wan")

ACCEPTS_PER_WAKEUP = 64
DEFAULT_CONNECT_TIMEOUT_NS = 10_000_000_000


class RelayError(OSError):
    """The relay cannot start (an address cannot be bound); one line for the user."""


class Relay:
    """Relays every ``(listen, target)`` pair on one emulated path, in this thread.

    ``bind()`` opens the listening sockets and returns their addresses (port 0 → the port the
    OS chose); ``run()`` serves until ``stop()`` (safe from a signal handler or another
    thread); everything is closed when ``run()`` returns (open connections are reset).
    """

    def __init__(
        self,
        spec: WanSpec,
        pairs: Sequence[tuple[Address, Address]],
        *,
        timer: str = "timerfd",
        connect_timeout_ns: int = DEFAULT_CONNECT_TIMEOUT_NS,
    ) -> None:
        if not pairs:
            raise ValueError("at least one (listen, target) pair is needed")
        self.spec = spec
        self.pairs = list(pairs)
        self.targets = [Target(target) for _, target in self.pairs]
        self.path = Path(spec)
        self.piece_bytes = self.path.up.piece_bytes()
        self.queue_bytes = spec.queue_bytes
        self.connect_timeout_ns = connect_timeout_ns
        self.reactor = Reactor(timer)
        self.conns: set[Conn] = set()
        self.accepted = 0
        self.bytes_in = [0, 0]  # bytes read [from servers, from clients]
        self._listeners: list[socket.socket] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.reactor.add_reader(self._wake_r.fileno(), self.reactor.stop)

    @property
    def timer(self) -> str:
        """The timer in use (``poll`` if a timerfd could not be created)."""
        return self.reactor.timer

    def bind(self) -> list[Address]:
        """Open every listening socket; returns the bound (host, port) of each, in order."""
        bound: list[Address] = []
        for (listen, _), target in zip(self.pairs, self.targets, strict=True):
            family, sockaddr = resolve(listen, passive=True)
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
                sock.listen(1024)
            except OSError as exc:
                sock.close()
                self.close()
                raise RelayError(exc.errno, _bind_message(exc, listen)) from None
            sock.setblocking(False)
            self._listeners.append(sock)
            host, port = sock.getsockname()[:2]
            bound.append((host, port))
            self.reactor.add_reader(sock.fileno(), self._acceptor(sock, target))
        return bound

    def _acceptor(self, lsock: socket.socket, target: Target) -> Callable[[], None]:
        def accept() -> None:
            for _ in range(ACCEPTS_PER_WAKEUP):
                try:
                    csock, _ = lsock.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        self._pause_accepting(lsock, accept, exc)
                    return
                csock.setblocking(False)
                csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                enable_timestamps(csock)
                self.accepted += 1
                self.conns.add(Conn(self, csock, target))

        return accept

    def _pause_accepting(
        self, lsock: socket.socket, accept: Callable[[], None], exc: OSError
    ) -> None:
        """Out of descriptors: stop accepting for 100 ms rather than spin on the error."""
        log.warning("accept failed (%s); pausing accepts for 100 ms", exc.strerror)
        fd = lsock.fileno()
        self.reactor.remove_reader(fd)

        def resume() -> None:
            if lsock.fileno() >= 0:
                self.reactor.add_reader(fd, accept)

        self.reactor.call_at(time.monotonic_ns() + 100_000_000, resume)

    def stats(self) -> dict[str, object]:
        """What the relay did, and how late its releases were (its own share of the delay)."""
        r = self.reactor
        return {
            "spec": self.spec.contract(),
            "timer": r.timer,
            "connections": self.accepted,
            "open": len(self.conns),
            "bytes_up": self.bytes_in[1],
            "bytes_down": self.bytes_in[0],
            "timed_events": sum(r.late),
            "late_p50_us_max": r.lateness_ns(0.5) / 1e3,
            "late_p99_us_max": r.lateness_ns(0.99) / 1e3,
            "late_max_us_max": r.lateness_ns(1.0) / 1e3,
        }

    def run(self) -> None:
        """Serve until :meth:`stop`; then reset every open connection and close everything."""
        try:
            self.reactor.run()
        finally:
            self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return (from a signal handler or another thread)."""
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # already closed, or the wake-up is already pending

    def close(self) -> None:
        for conn in list(self.conns):
            conn.abort(None)
        for sock in self._listeners:
            self.reactor.forget(sock.fileno())
            sock.close()
        self._listeners.clear()
        if self._wake_r.fileno() >= 0:
            self.reactor.forget(self._wake_r.fileno())
        self._wake_r.close()
        self._wake_w.close()
        self.reactor.close()


def _bind_message(exc: OSError, listen: Address) -> str:
    from echoswarm.listening import bind_error_text

    return bind_error_text(exc, listen[0], listen[1])
