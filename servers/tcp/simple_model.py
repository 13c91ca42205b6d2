"""``--model simple``: one client at a time, served to completion before the next is accepted.

Deliberately serial (the seed's baseline): while one client is connected every other client waits
in the listen backlog, connected at the TCP level but unanswered until its turn.
"""

from __future__ import annotations

import socket

from servers.tcp.acceptor import next_connection
from servers.tcp.discipline import Config, Ready, Stop, echo_connection


def serve(listener: socket.socket, cfg: Config, stop: Stop, ready: Ready) -> None:
    ready()
    while (conn := next_connection(listener, stop)) is not None:
        echo_connection(conn, cfg, stop)
