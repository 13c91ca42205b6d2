"""``--model prefork``: ``--workers`` processes (default 4 × CPUs, at least 4) forked after the
listening socket is bound; each takes the accept lock, accepts one connection, releases the lock
and echoes that connection to the end.

The lock is a POSIX record lock (``fcntl.lockf``) on an unlinked temporary file: record locks
belong to a process, so one inherited descriptor serves all workers, and the kernel releases the
lock if its holder dies — a killed worker can never wedge the others. The parent only prints the
LISTENING line, replaces a worker that dies unexpectedly, and on shutdown stops and reaps them.
"""

from __future__ import annotations

import fcntl
import logging
import select
import socket
import tempfile

from servers.tcp.acceptor import next_connection
from servers.tcp.children import Children
from servers.tcp.discipline import Config, Ready, Stop, echo_connection

log = logging.getLogger("servers.tcp")


def serve(listener: socket.socket, cfg: Config, stop: Stop, ready: Ready) -> None:
    lock_file = tempfile.TemporaryFile()
    lock_fd = lock_file.fileno()

    def worker(child_stop: Stop) -> None:
        while True:
            fcntl.lockf(lock_fd, fcntl.LOCK_EX)
            try:
                conn = next_connection(listener, child_stop)
            finally:
                fcntl.lockf(lock_fd, fcntl.LOCK_UN)
            if conn is None:
                return
            echo_connection(conn, cfg, child_stop)

    children = Children()
    try:
        for _ in range(cfg.workers):
            children.spawn(worker, close_in_child=stop.fds())
        ready()  # after the fork: the workers' pids are all in place when a harness looks
        poller = select.poll()
        poller.register(stop, select.POLLIN)
        poller.register(children.fileno(), select.POLLIN)
        while not stop.is_set():
            poller.poll()
            for pid in children.reap():
                if not stop.is_set():
                    log.warning("prefork worker %d exited; starting a replacement", pid)
                    children.spawn(worker, close_in_child=stop.fds())
    finally:
        children.stop_all()
        children.close()
        lock_file.close()
