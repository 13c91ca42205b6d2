"""``--model asyncio`` (the default): one event loop, a ``Protocol`` per connection.

Protocols rather than streams: ``data_received`` writes straight back to the transport, with no
task or coroutine per message. Backpressure uses the transport's own flow control — when its
write buffer passes ``HIGH_WATER`` it calls ``pause_writing`` and we pause reading — plus the
bytes held on ``--delay-ms`` timers (``loop.call_later``; the loop never sleeps). The accept loop
is ours (``sock_accept`` + ``connect_accepted_socket``) so ``--max-connections`` can leave clients
in the backlog, and so the ``uvloop`` model is this module with another loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from typing import cast

from servers.tcp import sockets
from servers.tcp.discipline import HIGH_WATER, LOW_WATER, Config, Ready, Stop

log = logging.getLogger("servers.tcp")

DEFAULT_MAX_CONNECTIONS = 100_000


class EchoProtocol(asyncio.Protocol):
    def __init__(self, delay_s: float, done: Callable[[EchoProtocol], None]) -> None:
        self.delay_s = delay_s
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.held = 0  # bytes waiting on a delay timer
        self.eof = False
        self.write_paused = False
        self.reading = True
        self.timers: set[asyncio.TimerHandle] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.delay_s:
            self.transport.write(data)
            return
        self.held += len(data)
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def release() -> None:
            if handle is not None:
                self.timers.discard(handle)
            self.held -= len(data)
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(data)
            self._update()

        handle = loop.call_later(self.delay_s, release)
        self.timers.add(handle)
        self._update()

    def eof_received(self) -> bool:
        self.eof = True
        # Keep the transport open while delayed echoes are pending; close() flushes the rest.
        return self.held > 0

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update()

    def _update(self) -> None:
        """Read only while little is queued; close after EOF once every echo is handed over."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.eof:
            if not self.held:
                transport.close()
            return
        want = not self.write_paused and self.held < (LOW_WATER if not self.reading else HIGH_WATER)
        if want != self.reading:
            (transport.resume_reading if want else transport.pause_reading)()
            self.reading = want

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("connection lost: %s", exc.__class__.__name__)
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()
        self.transport = None
        self.done(self)


async def readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock, wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock)


async def _serve(listener: socket.socket, cfg: Config, early: Stop, ready: Ready) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if early.is_set():  # a signal that came before the loop took over the handlers
        stop.set()
    limit = cfg.max_connections or DEFAULT_MAX_CONNECTIONS
    slots = asyncio.Semaphore(limit)
    live: set[EchoProtocol] = set()

    def finished(protocol: EchoProtocol) -> None:
        live.discard(protocol)
        slots.release()

    async def accept_forever() -> None:
        while True:
            await slots.acquire()
            try:
                conn, _ = await loop.sock_accept(listener)
            except (ConnectionAbortedError, BlockingIOError):
                slots.release()
                continue
            except OSError as exc:
                slots.release()
                sockets.accept_failed(listener, exc)
                # Linux fails accept() with EMFILE even when nothing is queued, and sock_accept
                # tries accept() before waiting, so retrying at once would spin without ever
                # yielding to the loop. Wait until a client is really queued.
                await readable(listener)
                continue
            await start(conn)

    async def start(conn: socket.socket) -> None:
        sockets.prepare_accepted(conn)
        protocol = EchoProtocol(cfg.delay_s, finished)
        live.add(protocol)
        try:
            await loop.connect_accepted_socket(lambda: protocol, conn)
        except OSError as exc:
            log.debug("could not start connection: %s", exc)
            conn.close()
            finished(protocol)

    acceptor = asyncio.create_task(accept_forever())
    ready()
    try:
        await stop.wait()
    finally:
        acceptor.cancel()
        for protocol in list(live):
            if protocol.transport is not None:
                protocol.transport.abort()
        await asyncio.gather(acceptor, return_exceptions=True)
        await asyncio.sleep(0)  # let connection_lost callbacks run before the loop closes


def serve_with(
    listener: socket.socket,
    cfg: Config,
    stop: Stop,
    ready: Ready,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> None:
    """Run the protocol server on a fresh loop (``loop_factory``; default asyncio's own)."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(listener, cfg, stop, ready))


def serve(listener: socket.socket, cfg: Config, stop: Stop, ready: Ready) -> None:
    serve_with(listener, cfg, stop, ready)
