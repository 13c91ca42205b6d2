"""The Locust side of the gRPC driver process (:mod:`echoswarm.streams.sidecar`).

One :class:`GrpcDriver` per load-generating process, started by the first gRPC user (after any
``--processes`` fork) and shared by every gRPC user of the process. A user asks it to open a
channel and to run calls; each request's samples arrive in batches and are fired as Locust
``request`` events by one reader greenlet (one wake-up per batch), and the request's end comes
after its last sample. No gRPC code runs in the Locust process.

If the driver process dies, every request waiting on it ends with
:data:`~echoswarm.streams.failures.DRIVER_GONE` and the next request starts a new one.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import gevent
import msgpack
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore

from echoswarm.measure import Sample
from echoswarm.streams import protocol as p
from echoswarm.streams.failures import DRIVER_GONE

log = logging.getLogger("echoswarm.users.grpc")
START_TIMEOUT_S = 60.0
_ids = itertools.count(1)


class DriverError(Exception):
    """The driver process could not be started (the message says why)."""


class Request:
    """One open or call: its samples go to ``sink``; :meth:`wait` returns how it ended."""

    __slots__ = ("rid", "sink", "result")

    def __init__(self, rid: int, sink: Callable[[Sample], None]) -> None:
        self.rid = rid
        self.sink = sink
        self.result: AsyncResult[str | None] = AsyncResult()

    def wait(self, timeout: float | None = None) -> str | None:
        """The request's failure text (None = it ended cleanly); when ``timeout`` passes
        first, a text saying the driver did not answer."""
        if timeout is None:
            return self.result.get()
        try:
            return self.result.get(timeout=timeout)
        except gevent.Timeout:
            return f"{DRIVER_GONE} (no answer within {timeout:g} s)"


class GrpcDriver:
    """Starts and talks to one driver process."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ, ECHOSWARM_PARENT_PID=str(os.getpid()))
        argv = [sys.executable, "-m", "echoswarm.streams.sidecar", "--fd", str(child.fileno())]
        try:
            self.proc = subprocess.Popen(
                argv, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL, env=env
            )
        except OSError as exc:
            parent.close()
            raise DriverError(f"cannot start the gRPC driver process: {exc}") from None
        finally:
            child.close()
        self.sock = parent
        self.pid = os.getpid()
        self.alive = True
        self._requests: dict[int, Request] = {}
        self._ready = Event()
        self._reader = gevent.spawn(self._read)
        if not self._ready.wait(START_TIMEOUT_S) or not self.alive:
            self.close()
            raise DriverError("the gRPC driver process did not start")

    # ------------------------------------------------------------------ requests
    def open(
        self, target: str, timeout_s: float, sink: Callable[[Sample], None], *, user_id: int,
        conn_id: int, name: str,
    ) -> Request:  # fmt: skip
        req = self._new(sink)
        self._send([p.OPEN, req.rid, target, timeout_s, user_id, conn_id, name])
        return req

    def call(
        self, channel_id: int, spec: dict[str, Any], sink: Callable[[Sample], None]
    ) -> Request:
        req = self._new(sink)
        self._send([p.CALL, req.rid, channel_id, spec])
        return req

    def stop(self, req: Request) -> None:
        self._send([p.STOP, req.rid])

    def close_channel(self, channel_id: int) -> None:
        self._send([p.CLOSE, channel_id])

    def _new(self, sink: Callable[[Sample], None]) -> Request:
        req = Request(next(_ids), sink)
        if not self.alive:
            req.result.set(DRIVER_GONE)
        else:
            self._requests[req.rid] = req
        return req

    def _send(self, msg: list[Any]) -> None:
        if not self.alive:
            return
        try:
            self.sock.sendall(msgpack.packb(msg))
        except OSError:
            self._gone()

    # -------------------------------------------------------------------- reader
    def _read(self) -> None:
        unpacker = msgpack.Unpacker(use_list=True, raw=False)
        requests = self._requests
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    break
                unpacker.feed(data)
                for msg in unpacker:
                    op = msg[0]
                    if op == p.SAMPLES:
                        for row in msg[1]:
                            req = requests.get(row[0])
                            if req is not None:
                                req.sink(Sample(*row[1:]))
                    elif op == p.OPENED or op == p.ENDED:
                        req = requests.pop(msg[1], None)
                        if req is not None:
                            req.result.set(msg[2])
                    elif op == p.HELLO:
                        self._ready.set()
        except OSError:
            pass
        except Exception:  # a sink (Locust listener) failed: log it, keep the driver honest
            log.exception("gRPC driver reader failed")
        self._gone()

    def _gone(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self._ready.set()
        for req in list(self._requests.values()):
            req.result.set(DRIVER_GONE)
        self._requests.clear()

    def close(self) -> None:
        """Stop the driver process (its channels close with it)."""
        if self.alive:
            self._send([p.QUIT])
        self._gone()
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_driver: GrpcDriver | None = None
_starting: tuple[int, Semaphore] | None = None


def driver() -> GrpcDriver:
    """This process's driver (a new one after a fork, or after the old one died); raises
    :class:`DriverError` when it cannot be started."""
    global _driver, _starting
    d = _driver
    if d is not None and d.pid == os.getpid() and d.alive:
        return d
    if _starting is None or _starting[0] != os.getpid():
        _starting = (os.getpid(), Semaphore())
    with _starting[1]:  # users spawned together wait for the one driver being started
        d = _driver
        if d is None or d.pid != os.getpid() or not d.alive:
            if d is not None and d.pid == os.getpid():
                d.close()
            d = _driver = GrpcDriver()
    return d


@atexit.register
def _close_at_exit() -> None:
    d = _driver
    if d is not None and d.pid == os.getpid():
        try:
            d.close()
        except Exception:  # exiting anyway; the driver also dies with us (pdeath)
            pass
