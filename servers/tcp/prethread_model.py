"""``--model prethread``: a fixed pool of ``--workers`` threads (default 64); each takes the
accept lock, accepts one connection, releases the lock and echoes that connection to the end.

So at most ``--workers`` clients are served at once; the rest wait in the listen backlog and are
served in turn. Only the lock holder waits on the listener, so a new client wakes one thread.
"""

from __future__ import annotations

import socket
import threading

from servers.tcp.acceptor import next_connection
from servers.tcp.discipline import Config, Ready, Stop, echo_connection, join_threads


def serve(listener: socket.socket, cfg: Config, stop: Stop, ready: Ready) -> None:
    accept_lock = threading.Lock()

    def worker() -> None:
        while True:
            with accept_lock:
                conn = next_connection(listener, stop)
            if conn is None:
                return
            echo_connection(conn, cfg, stop)

    threads = [
        threading.Thread(target=worker, name=f"echo-{i}", daemon=True) for i in range(cfg.workers)
    ]
    for thread in threads:
        thread.start()
    try:
        ready()
        stop.wait()
    finally:
        stop.set()
        join_threads(threads)
