"""What every echo server shares: the LISTENING line, usage errors, signals, logging.

Contract (DESIGN.md): default host 127.0.0.1; ``--port 0`` lets the OS choose; the first stdout
line, flushed, is ``LISTENING <kind> <host>:<port>``; SIGTERM/SIGINT shut down cleanly (exit 0);
bad flags or a port in use → one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from echoswarm.argtypes import float_between
from echoswarm.argtypes import non_negative_float as non_negative_float
from echoswarm.argtypes import non_negative_int as non_negative_int
from echoswarm.argtypes import port_number as port_number
from echoswarm.argtypes import positive_int as positive_int
from echoswarm.listening import announce as announce  # (the servers' LISTENING line)
from echoswarm.listening import bind_error_text
from echoswarm.listening import raise_nofile_limit as raise_nofile_limit

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2

MiB = 1024 * 1024
# Ranges of the flags every server takes (README "Servers"). Finite on purpose: an infinite
# delay would be a server that never answers, an infinite grace one that never stops.
MAX_DELAY_MS = 60_000.0
MAX_GRACE_S = 600.0
MAX_TIMEOUT_S = 3600.0
MAX_BACKLOG = 65535
MAX_MESSAGE_BYTES = 256 * MiB
# --delay-buffer-bytes (ws, grpc): delayed bytes one connection (one gRPC stream) may hold
# before the server stops reading it.
DEFAULT_DELAY_BUFFER = 4 * MiB
MIN_DELAY_BUFFER = 64 * 1024
MAX_DELAY_BUFFER = 1024 * MiB


def _size(n: int) -> str:
    """``268435456 (256 MiB)``: exact bytes, plus the round figure when there is one."""
    for unit, scale in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n} ({n // scale} {unit})"
    return str(n)


def int_between(lo: int, hi: int, unit: str = "") -> Callable[[str], int]:
    """An argparse type for an integer in ``lo..hi``; anything else is a one-line reason."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            shown = f"{_size(lo)}..{_size(hi)}" if unit == "bytes" else f"{lo}..{hi}"
            raise argparse.ArgumentTypeError(
                f"{text} is outside {shown}{' ' + unit if unit else ''}"
            )
        return value

    return check


def seconds_between(lo: float, hi: float) -> Callable[[str], float]:
    """An argparse type for a finite number of seconds in ``lo..hi`` (NaN/inf refused)."""
    return float_between(lo, hi, " s")


def bytes_between(lo: int, hi: int) -> Callable[[str], int]:
    return int_between(lo, hi, "bytes")


class UsageError(Exception):
    """A user mistake (bad flag value, port in use): one line, exit 2."""


def bind_error(exc: OSError, host: str, port: int) -> UsageError:
    """Turn a bind failure into the one-line usage error the contract asks for."""
    return UsageError(bind_error_text(exc, host, port))


def fail_usage(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def add_common_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    """--host, --port, --delay-ms, --log-level: the flags every server takes."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int_between(0, 65535),
        default=default_port,
        help=f"0..65535; 0 lets the OS choose (default {default_port})",
    )
    parser.add_argument(
        "--delay-ms",
        type=float_between(0, MAX_DELAY_MS, " ms"),
        default=0.0,
        help=f"fixed delay before every reply, 0..{MAX_DELAY_MS:.0f} ms "
        "(for measurement-fidelity tests; default 0)",
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
        type=seconds_between(0, MAX_GRACE_S),
        default=5.0,
        help=f"on SIGTERM/SIGINT, wait this long for {what}, 0..{MAX_GRACE_S:.0f} s (default 5)",
    )


def add_delay_buffer_argument(parser: argparse.ArgumentParser, per: str) -> None:
    """``--delay-buffer-bytes``: the byte bound on what ``--delay-ms`` holds back per ``per``."""
    parser.add_argument(
        "--delay-buffer-bytes",
        type=bytes_between(MIN_DELAY_BUFFER, MAX_DELAY_BUFFER),
        default=DEFAULT_DELAY_BUFFER,
        help=f"with --delay-ms: stop reading a {per} while it holds more than this many "
        f"delayed bytes (64 KiB..1 GiB; default 4 MiB)",
    )


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


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


def return_large_frees(threshold: int = MiB) -> bool:
    """Serve allocations of ``threshold`` bytes or more straight from mmap (glibc); True if set.

    glibc raises its mmap threshold dynamically (up to 32 MiB) each time a large block is freed,
    after which multi-MiB messages come from the heap and stay in RSS once freed: a server that
    once echoed a few large messages would look as if it kept them. A fixed threshold returns
    such blocks to the OS on free. A no-op off glibc or with ``MALLOC_MMAP_THRESHOLD_`` set.
    """
    import ctypes
    import os

    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    m_mmap_threshold = -3  # from glibc's malloc.h
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(m_mmap_threshold, threshold))
    except (OSError, AttributeError):
        return False
