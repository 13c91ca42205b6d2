"""Accept loops for the models that hand each connection to a blocking handler.

``next_connection`` is the single-acceptor step (simple, prethread and prefork call it, the pool
models under their accept lock). ``accept_loop`` is the dispatcher for thread- and
process-per-connection: it stops watching the listener while ``limit`` handlers are busy — new
clients then wait in the kernel backlog — and wakes when a handler finishes or on shutdown.
"""

from __future__ import annotations

import select
import socket
from typing import Protocol

from servers.tcp import sockets
from servers.tcp.discipline import Ready, Stop, wait_io


def next_connection(listener: socket.socket, stop: Stop) -> socket.socket | None:
    """Wait for and accept one connection; None once shutdown is requested."""
    while wait_io(listener, stop):
        conn = sockets.accept(listener)
        if conn is not None:
            return conn
    return None


class Handlers(Protocol):
    """What ``accept_loop`` needs from a thread- or process-per-connection model."""

    def fileno(self) -> int:
        """Readable when a handler may have finished."""
        ...

    def collect(self) -> None:
        """Account for finished handlers (after ``fileno`` became readable)."""

    def active(self) -> int:
        """Handlers still running."""
        ...

    def start(self, conn: socket.socket) -> None:
        """Serve ``conn`` in a new handler (which owns and closes it)."""

    def close(self) -> None:
        """After shutdown: wait for (or stop) every handler still running."""


def serve_per_connection(
    listener: socket.socket, stop: Stop, ready: Ready, handlers: Handlers, limit: int
) -> None:
    """A whole thread/process-per-connection server: announce, accept, then wind down."""
    try:
        ready()
        accept_loop(listener, stop, handlers, limit)
    finally:
        stop.set()
        handlers.close()


def accept_loop(listener: socket.socket, stop: Stop, handlers: Handlers, limit: int) -> None:
    """Accept until ``stop``, starting a handler per connection while fewer than ``limit`` run."""
    poller = select.poll()
    poller.register(stop, select.POLLIN)
    poller.register(handlers, select.POLLIN)
    watching = False
    while not stop.is_set():
        want = handlers.active() < limit
        if want != watching:
            if want:
                poller.register(listener, select.POLLIN)
            else:
                poller.unregister(listener)
            watching = want
        for fd, _ in poller.poll():
            if fd == handlers.fileno():
                handlers.collect()
            elif fd == listener.fileno() and not stop.is_set() and handlers.active() < limit:
                conn = sockets.accept(listener)
                if conn is not None:
                    handlers.start(conn)
