"""``--model fork``: the parent accepts and forks a child process per connection.

The child closes the listener, echoes its one connection and exits (``children`` makes sure it
never runs the parent's code). At most ``--max-connections`` (default 1,024) children exist at
once; beyond that clients wait in the backlog. The parent reaps children as they exit (SIGCHLD,
so it is interrupted often — PEP 475 retries its poll) and on shutdown SIGTERMs and reaps all.
"""

from __future__ import annotations

import logging
import socket

from servers.tcp.acceptor import serve_per_connection
from servers.tcp.children import Children
from servers.tcp.discipline import Config, Ready, Stop, echo_connection

log = logging.getLogger("servers.tcp")

DEFAULT_MAX_CONNECTIONS = 1024


class _ProcessPerConnection(Children):
    def __init__(self, listener: socket.socket, cfg: Config, stop: Stop) -> None:
        super().__init__()
        self.cfg = cfg
        self.inherited = (listener.fileno(), *stop.fds())  # what a child must not keep open

    def collect(self) -> None:
        self.reap()

    def active(self) -> int:
        return len(self.pids)

    def start(self, conn: socket.socket) -> None:
        try:
            self.spawn(
                lambda child_stop: echo_connection(conn, self.cfg, child_stop),
                close_in_child=self.inherited,
            )
        except OSError as exc:  # out of processes or memory: drop this client, keep serving
            log.warning("cannot fork for a new connection: %s", exc)
        finally:
            conn.close()  # the child has its own copy

    def close(self) -> None:
        self.stop_all()
        super().close()


def serve(listener: socket.socket, cfg: Config, stop: Stop, ready: Ready) -> None:
    handlers = _ProcessPerConnection(listener, cfg, stop)
    limit = cfg.max_connections or DEFAULT_MAX_CONNECTIONS
    serve_per_connection(listener, stop, ready, handlers, limit)
