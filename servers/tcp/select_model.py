"""``--model select``: one thread, readiness from select(2) (``selectors.SelectSelector``).

select() cannot watch descriptors at or above FD_SETSIZE (1024), so this model serves at most as
many connections as there are free descriptor numbers below it (about 1,010); further clients
wait in the backlog until one closes.
"""

from __future__ import annotations

import os
import selectors
import socket

from servers.tcp import reactor
from servers.tcp.discipline import Config, Ready, Stop

FD_SETSIZE = 1024


def select_capacity(reserve: int = 4) -> int:
    """How many more descriptors fit below FD_SETSIZE, keeping ``reserve`` spare."""
    probe = os.dup(0)  # the lowest free descriptor number: new sockets are numbered from here
    os.close(probe)
    return max(1, FD_SETSIZE - probe - reserve)


def serve(listener: socket.socket, cfg: Config, stop: Stop, ready: Ready) -> None:
    reactor.serve(
        listener,
        cfg,
        stop,
        ready,
        selectors.SelectSelector(),
        default_max=select_capacity(),
        fd_limit=FD_SETSIZE,
    )
