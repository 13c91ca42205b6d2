"""``--model thread``: a new thread per connection, each running the blocking echo handler.

At most ``--max-connections`` (default 4,096) handler threads run at once; beyond that new
clients wait in the backlog. On shutdown every handler wakes from its poll on the Stop pipe,
closes its connection and ends; the main thread waits for them (bounded by ``JOIN_SECONDS``).
"""

from __future__ import annotations

import logging
import socket
import threading

from servers.tcp.acceptor import serve_per_connection
from servers.tcp.discipline import Config, Ready, Stop, Wakeup, echo_connection, join_threads

log = logging.getLogger("servers.tcp")

DEFAULT_MAX_CONNECTIONS = 4096


class _ThreadPerConnection:
    def __init__(self, cfg: Config, stop: Stop) -> None:
        self.cfg, self.stop = cfg, stop
        self.running: set[threading.Thread] = set()
        self.lock = threading.Lock()
        self.finished = Wakeup()

    def fileno(self) -> int:
        return self.finished.fileno()

    def collect(self) -> None:
        self.finished.drain()  # the threads have already removed themselves

    def active(self) -> int:
        with self.lock:
            return len(self.running)

    def start(self, conn: socket.socket) -> None:
        thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
        with self.lock:
            self.running.add(thread)
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": drop this client, keep serving
            log.warning("cannot start a thread for a new connection: %s", exc)
            with self.lock:
                self.running.discard(thread)
            conn.close()

    def _handle(self, conn: socket.socket) -> None:
        try:
            echo_connection(conn, self.cfg, self.stop)
        finally:
            with self.lock:
                self.running.discard(threading.current_thread())
            self.finished.notify()

    def close(self) -> None:
        with self.lock:
            threads = list(self.running)
        join_threads(threads)
        self.finished.close()


def serve(listener: socket.socket, cfg: Config, stop: Stop, ready: Ready) -> None:
    handlers = _ThreadPerConnection(cfg, stop)
    limit = cfg.max_connections or DEFAULT_MAX_CONNECTIONS
    serve_per_connection(listener, stop, ready, handlers, limit)
