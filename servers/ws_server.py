"""WebSocket echo server (``websockets`` asyncio) at ``ws://HOST:PORT/echo``.

``python -m servers ws [--work none|stats] [--reply after|before] [--max-size N]
[--compression none|deflate] [--workers N] [--delay-ms D] ...``

Behaviour, and the choices behind it:

- Only ``/echo`` upgrades; any other path gets HTTP 404. A plain HTTP request to ``/echo`` that
  is not an upgrade gets 426 (from websockets). Neither is logged above DEBUG.
- Binary and text messages are echoed unchanged (text stays text). A message over
  ``--max-size`` (default 16 MiB) closes that connection with 1009; the server carries on.
- permessage-deflate is off unless ``--compression deflate``: echo payloads are measured, not
  shrunk.
- ``--work stats``: a binary message that starts with the frame magic ``ES`` is parsed with
  ``echoswarm.wire``; if it fails validation the connection is closed with 1007 and a short
  reason. A valid frame with the STATS request flag is answered with a frame carrying the same
  seq and timestamps, the STATS reply flag and a UTF-8 JSON payload. Other frames, other binary
  messages and text are echoed unchanged, as in ``--work none``.
  - ``--reply after`` (seed S001's "slow response"): the figures
    ``{"bytes", "max", "min", "mean", "median"}`` (numpy, payload as uint8) are computed in a
    process pool of ``--workers`` processes, awaited, then sent. One connection's requests are
    answered in order, one at a time; other connections carry on meanwhile.
  - ``--reply before`` ("fast response"): ``{"bytes": n, "status": "accepted"}`` goes back at
    once and the same computation runs in the background. At most ``BACKGROUND_LIMIT`` jobs are
    pending at a time; beyond that a connection waits for room before its acknowledgement
    (backpressure rather than unbounded memory).
- ``--delay-ms D`` delays every reply to D after its request arrived; pipelined requests are
  not serialised by it (reply i goes at arrival_i + D, in order). A connection holds at most
  ``--delay-buffer-bytes`` (4 MiB) of delayed messages; beyond that the server stops reading it
  until replies go out (TCP backpressure instead of memory growth).
- Memory per connection is bounded in bytes, not messages: websockets' own receive buffer is
  set to about 16 MiB of frames (``read_ahead_frames``: 16 frames, fewer for a larger
  ``--max-size``), so a client that pipelines large messages and never reads its replies stops
  being read after a few messages.
- Clients that vanish mid-message, reset connections, garbage instead of a handshake and
  handshake timeouts (``--open-timeout-s``, default 10) are logged at DEBUG, never as
  tracebacks. SIGTERM/SIGINT close every connection (1001) within ``--grace-s`` and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import json
import logging
import os
import signal
import time
import weakref
from concurrent.futures import Executor
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.protocol import State

from echoswarm import wire
from servers.common import (
    MAX_BACKLOG,
    MAX_MESSAGE_BYTES,
    MAX_TIMEOUT_S,
    add_common_arguments,
    add_delay_buffer_argument,
    add_grace_argument,
    announce,
    bind_error,
    bytes_between,
    int_between,
    raise_nofile_limit,
    return_large_frees,
    seconds_between,
)
from servers.held_bytes import AsyncHeldBytes

log = logging.getLogger("servers.ws")

PATH = "/echo"
DEFAULT_PORT = 8765
DEFAULT_MAX_SIZE = 16 * 1024 * 1024
DEFAULT_BACKLOG = 4096
BACKGROUND_LIMIT = 64
MAX_WORKERS = 256
# websockets buffers up to ``max_queue`` received frames per connection (default 16) before it
# stops reading: a count, so with 16 MiB messages a client that never reads its replies could
# park 256 MiB on one connection. Scale the count to keep about this many bytes instead.
READ_AHEAD_BYTES = 16 * 1024 * 1024
LIBRARY_MAX_QUEUE = 16
CLOSE_INVALID_DATA = 1007
CLOSE_INTERNAL_ERROR = 1011
MAX_REASON_BYTES = 123  # RFC 6455: a close reason fits in a 125-byte control frame


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, DEFAULT_PORT)
    parser.add_argument(
        "--work",
        choices=["none", "stats"],
        default="none",
        help="none: pure echo; stats: answer STATS frames with numpy pixel statistics",
    )
    parser.add_argument(
        "--reply",
        choices=["after", "before"],
        default="after",
        help="stats mode: reply after the work (default) or acknowledge before it",
    )
    parser.add_argument(
        "--max-size",
        type=bytes_between(1, MAX_MESSAGE_BYTES),
        default=DEFAULT_MAX_SIZE,
        help="largest message accepted, 1..256 MiB; larger ones close with 1009 (default 16 MiB)",
    )
    parser.add_argument(
        "--compression",
        choices=["none", "deflate"],
        default="none",
        help="permessage-deflate (default none)",
    )
    parser.add_argument(
        "--workers",
        type=int_between(1, MAX_WORKERS),
        default=min(os.cpu_count() or 1, MAX_WORKERS),
        help=f"stats mode: worker processes for the computation, 1..{MAX_WORKERS} "
        "(default: CPU count)",
    )
    parser.add_argument(
        "--backlog",
        type=int_between(1, MAX_BACKLOG),
        default=DEFAULT_BACKLOG,
        help=f"listen backlog, 1..{MAX_BACKLOG} (default {DEFAULT_BACKLOG}; asyncio's own 100 "
        "drops SYNs in bursts)",
    )
    parser.add_argument(
        "--open-timeout-s",
        type=seconds_between(0, MAX_TIMEOUT_S),
        default=10.0,
        help="drop connections whose opening handshake is not done by then "
        f"(0..{MAX_TIMEOUT_S:.0f} s, 0 = never; default 10)",
    )
    add_delay_buffer_argument(parser, "connection")
    add_grace_argument(parser, "connections to close")


def run(args: argparse.Namespace) -> int:
    raise_nofile_limit()
    return_large_frees()
    pool = None
    if args.work == "stats":
        from servers.ws_stats import start_pool  # numpy only where it is needed

        pool = start_pool(args.workers)
    try:
        asyncio.run(_serve(args, pool))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return 0


def read_ahead_frames(max_size: int) -> int:
    """websockets' ``max_queue`` for this ``--max-size``: 1..16 frames, about 16 MiB."""
    return max(1, min(LIBRARY_MAX_QUEUE, READ_AHEAD_BYTES // max_size))


class BadFrame(Exception):
    """A message claimed to be an echoswarm frame (magic ``ES``) but is not a valid one."""


class Echo:
    """Per-server state and the per-connection handler."""

    def __init__(self, args: argparse.Namespace, pool: Executor | None) -> None:
        self.delay_ns = int(args.delay_ms * 1_000_000)
        self.delay_buffer = args.delay_buffer_bytes
        self.stats = args.work == "stats"
        self.reply_before = args.reply == "before"
        self.pool = pool
        self.background = asyncio.Semaphore(BACKGROUND_LIMIT)

    async def handle(self, ws: ServerConnection) -> None:
        try:
            if self.delay_ns:
                await self._delayed(ws)
            else:
                async for message in ws:
                    await ws.send(await self.respond(message))
        except ConnectionClosed as exc:
            # A client that vanished, or a 1009 from --max-size: routine for an echo server.
            log.debug("%s closed: %s", _peer(ws), exc)
        except BadFrame as exc:
            log.debug("%s sent a bad frame: %s", _peer(ws), exc)
            await ws.close(CLOSE_INVALID_DATA, _reason(f"bad frame: {exc}"))
        except Exception as exc:  # e.g. a broken worker pool: tell this client, keep serving
            log.warning("%s: %s: %s", _peer(ws), type(exc).__name__, exc)
            await ws.close(CLOSE_INTERNAL_ERROR, _reason(f"server error: {type(exc).__name__}"))

    async def _delayed(self, ws: ServerConnection) -> None:
        """Read and reply concurrently, so each reply is due at its own arrival + delay.

        The reader stops reading while this connection holds ``--delay-buffer-bytes`` of
        messages not yet replied to (``servers.held_bytes``), so the queue needs no bound.
        """
        backlog: asyncio.Queue[tuple[int, str | bytes]] = asyncio.Queue()
        held = AsyncHeldBytes(self.delay_buffer)

        async def write() -> None:
            while True:
                arrived, message = await backlog.get()
                reply = await self.respond(message)
                wait = arrived + self.delay_ns - time.monotonic_ns()
                if wait > 0:
                    await asyncio.sleep(wait / 1e9)
                await ws.send(reply)
                held.release(len(message))

        async def read() -> None:
            while True:
                await held.wait_for_room()
                try:
                    message = await ws.recv()
                except ConnectionClosedOK:
                    return
                held.hold(len(message))
                backlog.put_nowait((time.monotonic_ns(), message))

        # Whichever ends first ends the connection: the client leaving stops the writer, and a
        # writer failure (a bad frame) must not wait for the client's next message.
        tasks = {asyncio.create_task(read()), asyncio.create_task(write())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
        for task in done:
            failure = task.exception()
            if failure is not None:
                raise failure

    async def respond(self, message: str | bytes) -> str | bytes:
        """The reply to one message (the message itself unless it is a STATS request)."""
        if not self.stats or isinstance(message, str) or message[:2] != wire.MAGIC:
            return message
        try:
            header, payload = wire.parse_frame(message)
        except wire.FrameError as exc:
            raise BadFrame(str(exc)) from None
        if not header.is_stats_request:
            return message
        if self.reply_before:
            await self.background.acquire()
            try:
                job = self._submit(bytes(payload))
            except BaseException:  # e.g. a broken pool refuses work: give the slot back
                self.background.release()
                raise
            job.add_done_callback(self._background_done)
            result: dict[str, Any] = {"bytes": len(payload), "status": "accepted"}
        else:
            result = await self._submit(bytes(payload))
        body = json.dumps(result).encode()
        return wire.build_frame(
            wire.HEADER_SIZE + len(body),
            seq=header.seq,
            intended_send_ns=header.intended_send_ns,
            sent_ns=header.sent_ns,
            flags=wire.FLAG_STATS_REPLY,
            payload=body,
        )

    def _submit(self, payload: bytes) -> asyncio.Future[dict[str, Any]]:
        from servers.ws_stats import compute_stats

        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self.pool, compute_stats, payload)

    def _background_done(self, job: asyncio.Future[Any]) -> None:
        self.background.release()
        if job.cancelled():
            return
        if job.exception() is not None:
            log.warning("background stats job failed: %r", job.exception())
        else:
            log.debug("background stats: %s", job.result())


class _TrackedConnection(ServerConnection):
    """Remembers every connection from accept on, so shutdown can also drop the ones still
    waiting for a handshake request (websockets would wait ``open_timeout`` for them)."""

    live: weakref.WeakSet[_TrackedConnection] = weakref.WeakSet()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _TrackedConnection.live.add(self)


def _drop_unopened() -> None:
    for connection in list(_TrackedConnection.live):
        if connection.protocol.state is State.CONNECTING and connection.transport is not None:
            connection.transport.abort()


def _peer(ws: ServerConnection) -> str:
    try:
        host, port = ws.remote_address[:2]
        return f"{host}:{port}"
    except (TypeError, ValueError):
        return "client"


def _reason(text: str) -> str:
    return text.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


class _OneLineBelowWarning(logging.Filter):
    """websockets attaches tracebacks to its DEBUG notes about failed handshakes; keep those to
    one line. WARNING and above (real server faults) keep their tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.levelno < logging.WARNING:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = ()
            record.exc_info = None
        return True


def _protocol_logger() -> logging.Logger:
    """The logger websockets writes to (its per-frame notes show only at --log-level debug)."""
    logger = logging.getLogger("servers.ws.protocol")
    logger.addFilter(_OneLineBelowWarning())
    return logger


def _only_echo_path(connection: ServerConnection, request: Request) -> Response | None:
    if urlsplit(request.path).path != PATH:
        return connection.respond(http.HTTPStatus.NOT_FOUND, f"Not found; try {PATH}\n")
    return None


async def _serve(args: argparse.Namespace, pool: Executor | None) -> None:
    # Handlers first: a harness may signal the moment it reads the LISTENING line.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    echo = Echo(args, pool)
    try:
        server = await serve(
            echo.handle,
            args.host,
            args.port,
            process_request=_only_echo_path,
            max_size=args.max_size,
            max_queue=read_ahead_frames(args.max_size),
            compression="deflate" if args.compression == "deflate" else None,
            logger=_protocol_logger(),
            create_connection=_TrackedConnection,
            backlog=args.backlog,
            open_timeout=args.open_timeout_s or None,
        )
    except OSError as exc:
        raise bind_error(exc, args.host, args.port) from None
    port = server.sockets[0].getsockname()[1] if server.sockets else args.port
    announce("ws", args.host, port)
    await stop.wait()
    log.info("stopping (grace %.1fs)", args.grace_s)
    server.close()  # refuses new connections, sends 1001 to open ones
    _drop_unopened()
    try:
        async with asyncio.timeout(args.grace_s):
            await server.wait_closed()
    except TimeoutError:
        # Peers that never answer the closing handshake would hold us for close_timeout each.
        stuck = list(server.all_connections)
        log.info("%d connection(s) still open after the grace period; aborting", len(stuck))
        for connection in stuck:
            connection.transport.abort()
