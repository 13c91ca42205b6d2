"""``--model epoll``: one thread, readiness from Linux epoll (``selectors.EpollSelector``).

Same loop as ``select`` (see ``reactor``); only the readiness system call differs, and epoll has
no FD_SETSIZE ceiling, so the connection count is bounded only by RLIMIT_NOFILE.
"""

from __future__ import annotations

import selectors
import socket

from servers.common import UsageError
from servers.tcp import reactor
from servers.tcp.discipline import Config, Ready, Stop

DEFAULT_MAX_CONNECTIONS = 100_000


def serve(listener: socket.socket, cfg: Config, stop: Stop, ready: Ready) -> None:
    if not hasattr(selectors, "EpollSelector"):
        raise UsageError("--model epoll needs Linux epoll, which this system lacks")
    reactor.serve(
        listener, cfg, stop, ready, selectors.EpollSelector(), default_max=DEFAULT_MAX_CONNECTIONS
    )
