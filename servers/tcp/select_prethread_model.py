"""``--model select_prethread``: one thread reads every connection with select(2); a pool of
``--workers`` threads (default 4 × CPUs, at least 4) sends the echoes.

A connection with a chunk handed to the pool is taken out of the read set until the pool reports
the chunk sent, so each connection has at most one ``CHUNK`` in flight (the buffer bound) and
bytes are echoed in order. Only the select thread closes sockets, so a pool thread never writes
to a descriptor that was closed and reused under it. Like ``select``, it serves at most the
connections whose descriptors fit below FD_SETSIZE; the rest wait in the backlog.
"""

from __future__ import annotations

import logging
import queue
import selectors
import socket
import threading

from servers.tcp import sockets
from servers.tcp.discipline import (
    CHUNK,
    Config,
    Ready,
    Stop,
    Wakeup,
    connection_error,
    join_threads,
    send_all,
)
from servers.tcp.select_model import FD_SETSIZE, select_capacity

log = logging.getLogger("servers.tcp")

READ = selectors.EVENT_READ


def serve(listener: socket.socket, cfg: Config, stop: Stop, ready: Ready) -> None:
    jobs: queue.SimpleQueue[tuple[socket.socket, bytes] | None] = queue.SimpleQueue()
    done: queue.SimpleQueue[tuple[socket.socket, bool]] = queue.SimpleQueue()
    finished = Wakeup()

    def sender() -> None:
        while (job := jobs.get()) is not None:
            sock, data = job
            try:
                delayed_stop = bool(cfg.delay_s) and stop.wait(cfg.delay_s)
                ok = not delayed_stop and send_all(sock, memoryview(data), stop)
            except OSError as exc:
                connection_error(f"fd {sock.fileno()}", exc)
                ok = False
            done.put((sock, ok))
            finished.notify()

    pool = [threading.Thread(target=sender, daemon=True) for _ in range(cfg.workers)]
    for thread in pool:
        thread.start()
    loop = _ReadLoop(listener, cfg, stop, finished, jobs, done)
    try:
        ready()
        loop.run()
    finally:
        stop.set()
        for _ in pool:
            jobs.put(None)
        join_threads(pool)
        loop.close_all()
        finished.close()


class _ReadLoop:
    """The select thread: accepts, reads, hands chunks to the pool, re-arms, closes."""

    def __init__(
        self,
        listener: socket.socket,
        cfg: Config,
        stop: Stop,
        finished: Wakeup,
        jobs: queue.SimpleQueue[tuple[socket.socket, bytes] | None],
        done: queue.SimpleQueue[tuple[socket.socket, bool]],
    ) -> None:
        self.listener, self.stop, self.finished = listener, stop, finished
        self.jobs, self.done = jobs, done
        self.limit = cfg.max_connections or select_capacity()
        self.sel = selectors.SelectSelector()
        self.conns: set[socket.socket] = set()
        self.accepting = False

    def run(self) -> None:
        self.sel.register(self.stop, READ, "stop")
        self.sel.register(self.finished, READ, "finished")
        self._accepting(True)
        while not self.stop.is_set():
            for key, _ in self.sel.select():
                if key.data == "stop":
                    return
                if key.data == "finished":
                    self._rearm()
                elif key.data == "listener":
                    self._accept()
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]

    def _accepting(self, on: bool) -> None:
        on = on and len(self.conns) < self.limit
        if on != self.accepting:
            if on:
                self.sel.register(self.listener, READ, "listener")
            else:
                self.sel.unregister(self.listener)
            self.accepting = on

    def _accept(self) -> None:
        sock = sockets.accept(self.listener)
        if sock is not None:
            if sock.fileno() >= FD_SETSIZE:
                log.warning("fd %d is beyond what select() can watch; closing", sock.fileno())
                sock.close()
                return
            sock.setblocking(False)
            self.conns.add(sock)
            self.sel.register(sock, READ, "conn")
        self._accepting(True)

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            connection_error(f"fd {sock.fileno()}", exc)
            data = b""
        self.sel.unregister(sock)
        if data:
            self.jobs.put((sock, data))
        else:  # EOF (or reset) with nothing in flight: every byte has been echoed
            self._close(sock)

    def _rearm(self) -> None:
        self.finished.drain()
        while True:
            try:
                sock, ok = self.done.get_nowait()
            except queue.Empty:
                return
            if ok and not self.stop.is_set():
                self.sel.register(sock, READ, "conn")
            else:
                self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        self.conns.discard(sock)
        sock.close()
        self._accepting(True)

    def close_all(self) -> None:
        for sock in list(self.conns):
            sock.close()
        self.conns.clear()
        self.sel.close()
