"""A single-threaded, non-blocking echo loop over any ``selectors`` selector.

The ``select`` and ``epoll`` models are this loop with a different readiness mechanism, so the
comparison between them measures the system call and nothing else. Per connection the loop keeps
an output buffer; it stops reading a connection while more than ``HIGH_WATER`` bytes are waiting
to go out (including bytes held back by ``--delay-ms`` timers) and resumes below ``LOW_WATER``,
so a client that never reads cannot make the server grow without bound. Sends are attempted at
once (most echoes fit the socket buffer) and only register write interest when they fall short,
which saves a readiness round trip per message. ``--delay-ms`` is a timer heap that sets the
select timeout — the loop never sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from servers.tcp import sockets
from servers.tcp.discipline import (
    CHUNK,
    HIGH_WATER,
    LOW_WATER,
    Config,
    Ready,
    Stop,
    connection_error,
)

log = logging.getLogger("servers.tcp")

ACCEPTS_PER_WAKE = 64  # bound the accept burst so established connections keep being served

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
T = TypeVar("T")


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    out: bytearray = field(default_factory=bytearray)
    held: int = 0  # bytes waiting on a --delay-ms timer
    eof: bool = False
    closed: bool = False
    events: int = 0  # what the selector currently watches for


class Reactor:
    """Echo every connection of ``listener`` until ``stop`` is set."""

    def __init__(
        self,
        listener: socket.socket,
        cfg: Config,
        stop: Stop,
        selector: selectors.BaseSelector,
        *,
        max_connections: int,
        fd_limit: int | None = None,
    ) -> None:
        self.listener = listener
        self.cfg = cfg
        self.stop = stop
        self.sel = selector
        self.max_connections = max_connections
        self.fd_limit = fd_limit  # select() cannot watch descriptors >= FD_SETSIZE
        self.conns: set[_Conn] = set()
        self.timers: list[tuple[float, int, _Conn, bytes]] = []
        self._order = itertools.count()
        self._accepting = False

    def run(self, ready: Ready) -> None:
        self.sel.register(self.stop, READ, self.stop)
        self._set_accepting(True)
        ready()
        try:
            while not self.stop.is_set():
                for key, mask in self.sel.select(self._timeout()):
                    if key.data is self.stop:
                        return
                    if key.data is None:
                        self._accept()
                        continue
                    conn: _Conn = key.data
                    if mask & READ:
                        self._read(conn)
                    if mask & WRITE and not conn.closed:
                        self._write(conn)
                self._fire_timers()
        finally:
            for conn in list(self.conns):
                self._close(conn)
            self.sel.close()

    # -- accepting ----------------------------------------------------------------------------

    def _set_accepting(self, on: bool) -> None:
        """Leave further connections queued in the kernel backlog while at the limit."""
        if on != self._accepting:
            if on:
                self.sel.register(self.listener, READ, None)
            else:
                self.sel.unregister(self.listener)
            self._accepting = on

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            if len(self.conns) >= self.max_connections:
                break
            sock = sockets.accept(self.listener)
            if sock is None:
                break
            if self.fd_limit is not None and sock.fileno() >= self.fd_limit:
                log.warning("fd %d is beyond what select() can watch; closing", sock.fileno())
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock)
            self.conns.add(conn)
            self._update(conn)
        self._set_accepting(len(self.conns) < self.max_connections)

    # -- one connection -----------------------------------------------------------------------

    def _io(self, conn: _Conn, op: Callable[[Any], T], arg: Any) -> T | None:
        """``op(arg)`` on the socket; None if it would block or the peer is gone (then closed)."""
        try:
            return op(arg)
        except BlockingIOError:
            return None
        except OSError as exc:
            connection_error(f"fd {conn.sock.fileno()}", exc)
            self._close(conn)
            return None

    def _read(self, conn: _Conn) -> None:
        data = self._io(conn, conn.sock.recv, CHUNK)
        if data is None:
            return
        if not data:
            conn.eof = True
        elif self.cfg.delay_s:
            conn.held += len(data)
            due = time.monotonic() + self.cfg.delay_s
            heapq.heappush(self.timers, (due, next(self._order), conn, data))
        else:
            conn.out += data
            self._flush(conn)
        self._update(conn)

    def _write(self, conn: _Conn) -> None:
        self._flush(conn)
        self._update(conn)

    def _flush(self, conn: _Conn) -> None:
        if conn.closed or not conn.out:
            return
        sent = self._io(conn, conn.sock.send, conn.out)
        if sent:
            del conn.out[:sent]

    def _update(self, conn: _Conn) -> None:
        """Re-derive what to watch for from the connection's state (the backpressure rule)."""
        if conn.closed:
            return
        backlog = len(conn.out) + conn.held
        if conn.eof and not backlog:
            self._close(conn)  # everything the client sent has been echoed
            return
        reading = bool(conn.events & READ)
        if conn.eof:
            reading = False
        elif reading and backlog > HIGH_WATER:
            reading = False
        elif not reading and backlog < LOW_WATER:
            reading = True
        events = (READ if reading else 0) | (WRITE if conn.out else 0)
        if events == conn.events:
            return
        if not conn.events:
            self.sel.register(conn.sock, events, conn)
        elif not events:
            self.sel.unregister(conn.sock)
        else:
            self.sel.modify(conn.sock, events, conn)
        conn.events = events

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        if conn.events:
            self.sel.unregister(conn.sock)
        conn.closed = True
        conn.sock.close()
        self.conns.discard(conn)
        if not self.stop.is_set():
            self._set_accepting(len(self.conns) < self.max_connections)

    # -- --delay-ms -----------------------------------------------------------------------------

    def _timeout(self) -> float | None:
        if not self.timers:
            return None
        return max(0.0, self.timers[0][0] - time.monotonic())

    def _fire_timers(self) -> None:
        now = time.monotonic()
        touched = set()
        while self.timers and self.timers[0][0] <= now:
            _, _, conn, data = heapq.heappop(self.timers)
            if conn.closed:
                continue
            conn.held -= len(data)
            conn.out += data
            touched.add(conn)
        for conn in touched:
            self._flush(conn)
            self._update(conn)


def serve(
    listener: socket.socket,
    cfg: Config,
    stop: Stop,
    ready: Ready,
    selector: selectors.BaseSelector,
    *,
    default_max: int,
    fd_limit: int | None = None,
) -> None:
    limit = cfg.max_connections or default_max
    Reactor(listener, cfg, stop, selector, max_connections=limit, fd_limit=fd_limit).run(ready)
