"""The LISTENING-line contract of every process that listens for the harness (the echo servers,
the WAN relay): the first stdout line, flushed, is ``LISTENING <kind> <host>:<port>``; a bind
that fails is one line saying why; the open-files limit is raised so thousands of connections
fit. ``servers`` and ``echoswarm.wan`` print it, ``echoswarm.orchestrate.supervise`` reads it.
"""

from __future__ import annotations

import errno
import re
import sys

LISTENING_RE = re.compile(r"^LISTENING (\w+) \[?([^\]\s]+?)\]?:(\d+)\s*$")


def announce(kind: str, host: str, port: int) -> None:
    """Print the LISTENING line that harnesses wait for (must be the first stdout line)."""
    shown = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"LISTENING {kind} {shown}:{port}\n")
    sys.stdout.flush()


def bind_error_text(exc: OSError, host: str, port: int) -> str:
    """A bind failure as the one line the contract asks for."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use"
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return f"cannot bind {host}:{port}: address not available on this machine"
    if exc.errno == errno.EACCES:
        return f"cannot bind {host}:{port}: permission denied"
    return f"cannot bind {host}:{port}: {exc.strerror or exc}"


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
