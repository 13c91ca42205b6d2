"""The one echo and shutdown discipline every TCP model follows.

- ``Config``: what a model is asked to do (address, backlog, delay, workers, limits).
- ``Stop``: a latch set by SIGTERM/SIGINT. It owns a pipe whose read end becomes readable for
  good once set, so every waiting thread or loop can include it in its poll and wake at once
  (no polling timeouts, no blocking call a shutdown cannot interrupt).
- ``Wakeup``: a drained self-pipe for "something changed" (children exited, a send finished).
- ``echo_connection``: echo one connection on the calling thread, for the blocking models
  (simple, thread, prethread, fork, prefork): read at most ``CHUNK`` bytes, wait ``delay``, send
  all of them (partial sends retried), repeat until EOF. One chunk in flight per connection is
  the buffer bound; a client that does not read stalls only its own handler.

EINTR: Python retries interrupted system calls itself (PEP 475) after running our signal
handlers, which only set flags and write to pipes — so a signal never surfaces as an error here,
it just makes the Stop pipe readable.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("servers.tcp")

CHUNK = 64 * 1024
"""Largest single read; also the per-connection buffer for the blocking models."""

HIGH_WATER = 256 * 1024
"""Event-loop models stop reading a connection while more than this is waiting to be sent."""

LOW_WATER = 64 * 1024
"""…and resume once it drains below this."""

JOIN_SECONDS = 5.0
"""How long shutdown waits for handler threads/children before giving up on them."""

Ready = Callable[[], None]
"""Each model's ``serve`` calls this once it is serving: it prints the LISTENING line."""

# Errors that mean "the peer is gone", logged at debug level, never as a traceback.
PEER_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError)


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    backlog: int
    delay_s: float
    workers: int  # pool size for prefork/prethread/select_prethread; unused elsewhere
    max_connections: int  # 0 = the model's own limit


class _Pipe:
    """A pipe used only to make a poll wake up; the write end never blocks."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def fileno(self) -> int:
        return self._r

    def fds(self) -> tuple[int, int]:
        """Both ends, for a forked child to close (it makes pipes of its own)."""
        return self._r, self._w

    def _poke(self) -> None:
        try:
            os.write(self._w, b"x")
        except BlockingIOError:
            pass  # a byte is already waiting: one wake is enough

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


class Stop(_Pipe):
    """A shutdown latch with a pollable file descriptor (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Safe from a signal handler: a flag and one non-blocking write (never drained)."""
        if not self._set:
            self._set = True
            self._poke()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds (None = forever) unless stopped; True if stopped."""
        if self._set:
            return True
        poller = select.poll()
        poller.register(self._r, select.POLLIN)
        poller.poll(None if timeout is None else timeout * 1000.0)
        return self._set

    def install(self, *signums: int) -> None:
        """Make these signals (default SIGTERM and SIGINT) set the latch."""

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: shutting down (pid %d)", signum, os.getpid())
            self.set()

        for signum in signums or (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handler)


class Wakeup(_Pipe):
    """A self-pipe that is drained after each wake (unlike ``Stop``, which stays set)."""

    def notify(self) -> None:
        self._poke()

    def drain(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass


def connection_error(where: str, exc: OSError) -> None:
    """The one way a failed connection is reported: a vanished peer is routine (debug line);
    anything else is a warning — never a traceback, and never fatal to the server."""
    if isinstance(exc, PEER_GONE) or exc.errno in (errno.ENOTCONN, errno.EBADF):
        log.debug("%s: peer gone (%s)", where, exc.__class__.__name__)
    else:
        log.warning("%s: %s", where, exc)


def wait_io(sock: socket.socket, stop: Stop, *, write: bool = False) -> bool:
    """Block until ``sock`` is readable (or writable); False if shutdown came first.

    poll(), not select(): thread-per-connection servers have descriptors above FD_SETSIZE.
    """
    poller = select.poll()
    mask = select.POLLOUT if write else select.POLLIN
    poller.register(sock, mask)
    poller.register(stop, select.POLLIN)
    while True:
        ready = dict(poller.poll())
        if stop.fileno() in ready or stop.is_set():
            return False
        if ready:
            return True


def send_all(sock: socket.socket, data: memoryview, stop: Stop) -> bool:
    """Send every byte of ``data`` on a non-blocking socket, retrying partial sends.

    Returns False if shutdown interrupted it; raises OSError (usually one of ``PEER_GONE``)
    if the connection failed.
    """
    sent = 0
    while sent < len(data):
        try:
            sent += sock.send(data[sent:])
        except BlockingIOError:
            if not wait_io(sock, stop, write=True):
                return False
    return True


def echo_connection(conn: socket.socket, cfg: Config, stop: Stop) -> None:
    """Echo ``conn`` until EOF, reset or shutdown; always closes it. Never raises for the peer."""
    peer = _peer(conn)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        conn.setblocking(False)
        while True:
            try:
                n = conn.recv_into(buf)
            except BlockingIOError:
                if not wait_io(conn, stop):
                    return
                continue
            if n == 0:  # EOF: everything received has already been echoed
                log.debug("%s: closed by peer", peer)
                return
            if cfg.delay_s and stop.wait(cfg.delay_s):
                return
            if not send_all(conn, view[:n], stop):
                return
    except OSError as exc:
        connection_error(peer, exc)
    finally:
        view.release()
        conn.close()


def _peer(conn: socket.socket) -> str:
    try:
        host, port = conn.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return f"fd {conn.fileno()}"


def default_workers(model: str) -> int:
    """Pool sizes when --workers is not given (documented in the README and --help)."""
    cpus = os.cpu_count() or 1
    return {"prefork": max(4, 4 * cpus), "prethread": 64, "select_prethread": max(4, 4 * cpus)}.get(
        model, 1
    )


def join_threads(threads: list[threading.Thread], timeout: float = JOIN_SECONDS) -> None:
    """Wait for handler threads after ``Stop`` was set; daemon stragglers die with the process."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    if stuck:
        log.warning("%d handler threads did not finish within %.0fs", stuck, timeout)
