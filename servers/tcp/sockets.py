"""Socket setup shared by every TCP model: the listening socket and accepted sockets.

One place decides SO_REUSEADDR, the listen backlog (clamped by the kernel's somaxconn, which we
read so the log can say what was really granted), TCP_NODELAY on accepted sockets, and what to
do when accept() fails (including running out of descriptors; ``servers.common`` raises
RLIMIT_NOFILE to the hard limit at start).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from pathlib import Path

from servers.common import bind_error

log = logging.getLogger("servers.tcp")

SOMAXCONN_PATH = Path("/proc/sys/net/core/somaxconn")


def somaxconn() -> int | None:
    """The kernel's cap on any listen backlog (Linux), or None where it cannot be read."""
    try:
        return int(SOMAXCONN_PATH.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def effective_backlog(requested: int) -> int:
    """What the kernel will actually grant: listen() silently truncates to somaxconn."""
    cap = somaxconn()
    return requested if cap is None else min(requested, cap)


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking listening socket with SO_REUSEADDR; bind errors become UsageError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise bind_error(OSError(exc.errno, f"cannot resolve {host!r}"), host, port) from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise bind_error(exc, host, port) from None
    # Non-blocking so that every model can wait for "listener readable OR stop requested" and
    # never sits in a blocking accept() that a shutdown cannot interrupt.
    sock.setblocking(False)
    _spare.reserve()
    granted = effective_backlog(backlog)
    log.info("backlog %d requested, %d granted (somaxconn %s)", backlog, granted, somaxconn())
    return sock


def bound_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def prepare_accepted(conn: socket.socket) -> None:
    """Per-connection options: no Nagle delay (echo replies are small and latency-bound)."""
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # the peer may already have reset it; the read will notice
        log.debug("TCP_NODELAY on fd %d failed: %s", conn.fileno(), exc)


class _SpareDescriptor:
    """One descriptor held in reserve for running out of them (EMFILE/ENFILE).

    A level-triggered loop whose accept() keeps failing would spin on a listener that stays
    readable. Instead we free the spare, accept the pending client, close it at once (it sees a
    clean EOF rather than a hang) and take the spare back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None

    def reserve(self) -> None:
        with self._lock:
            if self._fd is None:
                try:
                    self._fd = os.open(os.devnull, os.O_RDONLY)
                except OSError:
                    pass

    def shed(self, listener: socket.socket) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            try:
                conn, _ = listener.accept()
                conn.close()
            except OSError:
                pass
        self.reserve()


_spare = _SpareDescriptor()


def accept(listener: socket.socket) -> socket.socket | None:
    """Accept one pending connection (non-blocking), prepared; None if none is pending.

    ECONNABORTED means a client gave up while queued: not our error, just skip it.
    """
    try:
        conn, _ = listener.accept()
    except (BlockingIOError, ConnectionAbortedError):
        return None
    except OSError as exc:
        accept_failed(listener, exc)
        return None
    prepare_accepted(conn)
    return conn


def accept_failed(listener: socket.socket, exc: OSError) -> None:
    """Handle an accept() error other than "nothing pending" without crashing or spinning."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        log.warning("out of file descriptors (RLIMIT_NOFILE): refused a connection")
        _spare.shed(listener)
    else:  # ENOBUFS, ENOMEM, EPROTO...: transient, the next attempt may succeed
        log.warning("accept failed: %s", exc)
