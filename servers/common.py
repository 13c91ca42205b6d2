"""What every echo server shares: the LISTENING line, usage errors, signals, logging.

Contract (DESIGN.md): default host 127.0.0.1; ``--port 0`` lets the OS choose; the first stdout
line, flushed, is ``LISTENING <kind> <host>:<port>``; SIGTERM/SIGINT shut down cleanly (exit 0);
bad flags or a port in use → one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from typing import NoReturn

from echoswarm.argtypes import non_negative_float as non_negative_float
from echoswarm.argtypes import non_negative_int as non_negative_int
from echoswarm.argtypes import port_number as port_number
from echoswarm.argtypes import positive_int as positive_int

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A user mistake (bad flag value, port in use): one line, exit 2."""


def announce(kind: str, host: str, port: int) -> None:
    """Print the LISTENING line that harnesses wait for (must be the first stdout line)."""
    shown = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"LISTENING {kind} {shown}:{port}\n")
    sys.stdout.flush()


def bind_error(exc: OSError, host: str, port: int) -> UsageError:
    """Turn a bind failure into the one-line usage error the contract asks for."""
    if exc.errno == errno.EADDRINUSE:
        return UsageError(f"port {port} on {host} is already in use")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return UsageError(f"cannot bind {host}:{port}: address not available on this machine")
    if exc.errno == errno.EACCES:
        return UsageError(f"cannot bind {host}:{port}: permission denied")
    return UsageError(f"cannot bind {host}:{port}: {exc.strerror or exc}")


def fail_usage(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def add_common_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    """--host, --port, --delay-ms, --log-level: the flags every server takes."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=port_number, default=default_port, help="0 lets the OS choose"
    )
    parser.add_argument(
        "--delay-ms",
        type=non_negative_float,
        default=0.0,
        help="fixed delay before every reply, in ms (for measurement-fidelity tests)",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="stderr log level (default warning)",
    )


def add_grace_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--grace-s``: how long SIGTERM/SIGINT wait for ``what`` before cutting it off."""
    parser.add_argument(
        "--grace-s",
        type=non_negative_float,
        default=5.0,
        help=f"on SIGTERM/SIGINT, wait this long for {what} (default 5)",
    )


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard limit; return the new soft limit.

    Servers must hold thousands of idle connections; the usual soft limit of 1024 would make
    ``accept`` fail long before memory or CPU run out.
    """
    try:
        import resource
    except ImportError:  # not on POSIX: nothing to raise
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def probe_bind(host: str, port: int) -> UsageError | None:
    """Why ``host:port`` cannot be bound, or None if a plain socket can bind it right now.

    gRPC's ``add_insecure_port`` reports a bare RuntimeError; binding a plain socket the same
    way recovers the errno so the user gets the same one-line message as from other servers.
    """
    import socket

    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return UsageError(f"cannot bind {host}:{port}: {exc.strerror or exc}")
    for family, socktype, proto, _, addr in infos:
        with socket.socket(family, socktype, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                return bind_error(exc, host, port)
    return None


def cap_malloc_arenas(arenas: int = 2) -> bool:
    """Limit glibc's malloc arenas (unless ``MALLOC_ARENA_MAX`` is set); True if applied.

    gRPC core allocates from many threads; by default glibc gives each contending thread its
    own arena (up to 8 per core) and freed connection memory stays spread over them, so RSS
    creeps up with every thousand connections served. Two arenas keep it flat. Call before
    the server starts its threads. A no-op off glibc.
    """
    import ctypes
    import os

    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    m_arena_max = -8  # from glibc's malloc.h
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(m_arena_max, arenas))
    except (OSError, AttributeError):
        return False
