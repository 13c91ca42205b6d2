"""gRPC echo server: the four RPC kinds of ``protos/echo.proto``, health and reflection.

``python -m servers grpc [--impl aio|sync] [--threads N] [--delay-ms D] ...``

- ``Unary`` echoes the Frame; ``Bidi`` echoes every Frame as it arrives (one reply per frame,
  fields unchanged); ``ClientStream`` answers a StreamSummary (frames, payload bytes, first and
  last seq); ``ServerStream`` pushes ``count`` frames of ``payload_bytes`` on a schedule: frame i
  is due at start + i * interval (no drift from cumulative sleeps); ``intended_send_ns`` is that
  due time and ``sent_ns`` the moment it was handed to gRPC, both on this server's monotonic
  clock.
- ``--delay-ms D`` delays every reply by D after its request arrived. Pipelined Bidi frames are
  not serialised by it: reply i goes at arrival_i + D, in order. For ServerStream the whole
  schedule starts D after the request.
- ``--impl aio`` (default) runs on ``grpc.aio``; ``--impl sync`` on a thread pool of
  ``--threads`` workers (each open stream holds one thread, hence the large default). As in
  any grpcio thread-pool server, calls beyond that many wait for a free thread: a load test
  sees that as latency, which is what the sync/aio comparison is meant to show.
- A connection that has not completed its HTTP/2 handshake within ``--handshake-timeout-s``
  (gRPC's own default, 120 s) is dropped, so silent clients do not pile up.
- Health (``grpc.health.v1``: SERVING for "" and the Echo service) and reflection are served.
- SO_REUSEPORT is switched off, so a second server on a busy port fails (exit 2) instead of
  silently sharing it. SIGTERM/SIGINT stop the server with a ``--grace-s`` grace period: calls
  in progress may finish within it, those still open after it are cancelled (the client sees a
  status, the process exits 0); once no Echo call is left the server stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import logging
import queue
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from echoswarm.wire import pattern
from protos import echo_pb2, echo_pb2_grpc
from servers.common import (
    UsageError,
    add_common_arguments,
    add_grace_argument,
    announce,
    cap_malloc_arenas,
    non_negative_float,
    positive_int,
    probe_bind,
    raise_nofile_limit,
)

log = logging.getLogger("servers.grpc")

SERVICE_NAME = echo_pb2.DESCRIPTOR.services_by_name["Echo"].full_name
DEFAULT_PORT = 50051
DEFAULT_THREADS = 512
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
# Head-room for the Frame's other fields when checking a requested payload against the limit.
FRAME_OVERHEAD = 64
# Bounded so a client pipelining into a delayed Bidi stream meets HTTP/2 flow control instead of
# growing the server's memory.
BIDI_BACKLOG = 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, DEFAULT_PORT)
    parser.add_argument(
        "--impl", choices=["aio", "sync"], default="aio", help="grpc.aio (default) or thread pool"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=DEFAULT_THREADS,
        help=f"sync impl: worker threads; each open stream holds one (default {DEFAULT_THREADS})",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=positive_int,
        default=DEFAULT_MAX_MESSAGE,
        help="largest message sent or received (default 64 MiB)",
    )
    parser.add_argument(
        "--handshake-timeout-s",
        type=non_negative_float,
        default=120.0,
        help="drop connections that have not completed the HTTP/2 handshake by then (120)",
    )
    add_grace_argument(parser, "open calls to finish")


def run(args: argparse.Namespace) -> int:
    raise_nofile_limit()
    cap_malloc_arenas()
    config = Config(
        host=args.host,
        port=args.port,
        delay_ns=int(args.delay_ms * 1_000_000),
        max_message_bytes=args.max_message_bytes,
        grace_s=args.grace_s,
        handshake_timeout_s=args.handshake_timeout_s,
    )
    if args.impl == "aio":
        asyncio.run(_serve_aio(config))
    else:
        _serve_sync(config, args.threads)
    return 0


@dataclass(frozen=True)
class Config:
    """The server's settings, as both implementations need them."""

    host: str
    port: int
    delay_ns: int
    max_message_bytes: int
    grace_s: float
    handshake_timeout_s: float

    def options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.so_reuseport", 0),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.server_handshake_timeout_ms", max(1, int(self.handshake_timeout_s * 1000))),
        ]

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# --- shared pieces -------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _payload(size: int) -> bytes:
    return pattern(size)


def _count(summary: echo_pb2.StreamSummary, frame: echo_pb2.Frame) -> None:
    """Fold one uploaded frame into the summary (payloads are not kept)."""
    if summary.frames == 0:
        summary.first_seq = frame.seq
    summary.frames += 1
    summary.bytes += len(frame.payload)
    summary.last_seq = frame.seq


def _check_stream_request(request: echo_pb2.StreamRequest, limit: int) -> str | None:
    """Why a ServerStream request cannot be served, or None."""
    if request.payload_bytes + FRAME_OVERHEAD > limit:
        return (
            f"payload_bytes {request.payload_bytes} exceeds this server's message limit "
            f"({limit} bytes, --max-message-bytes)"
        )
    return None


class Inflight:
    """Counts Echo calls in progress: at shutdown the grace period is for those calls, so with
    none left the server stops at once instead of waiting out the grace period (gRPC would also
    wait for connections that never started a call)."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()

    def __enter__(self) -> None:
        with self._lock:
            self._count += 1
            self.idle.clear()

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._count -= 1
            if self._count == 0:
                self.idle.set()


def _tracked(method: Callable[..., Any]) -> Any:
    """Run a servicer method (plain, generator, coroutine or async generator) inside
    ``self.inflight``; the wrapper keeps the method's kind, which gRPC inspects."""
    if inspect.isasyncgenfunction(method):

        async def agen(self: Any, *args: Any) -> AsyncIterator[Any]:
            with self.inflight:
                async for item in method(self, *args):
                    yield item

        return functools.wraps(method)(agen)
    if inspect.iscoroutinefunction(method):

        async def coro(self: Any, *args: Any) -> Any:
            with self.inflight:
                return await method(self, *args)

        return functools.wraps(method)(coro)
    if inspect.isgeneratorfunction(method):

        def gen(self: Any, *args: Any) -> Iterator[Any]:
            with self.inflight:
                yield from method(self, *args)

        return functools.wraps(method)(gen)

    def plain(self: Any, *args: Any) -> Any:
        with self.inflight:
            return method(self, *args)

    return functools.wraps(method)(plain)


def _bind(server: Any, config: Config) -> int:
    # Check first: on failure gRPC core also logs its own multi-line error to stderr.
    problem = probe_bind(config.host, config.port)
    if problem:
        raise problem
    try:
        port = int(server.add_insecure_port(config.address))
    except RuntimeError:
        port = 0
    if port == 0:  # gRPC says only "failed to bind"; find the real reason
        raise probe_bind(config.host, config.port) or UsageError(f"cannot bind {config.address}")
    return port


# --- grpc.aio ------------------------------------------------------------------------------


async def _sleep_until(deadline_ns: int) -> None:
    wait = deadline_ns - time.monotonic_ns()
    if wait > 0:
        await asyncio.sleep(wait / 1e9)


class AioEcho(echo_pb2_grpc.EchoServicer):
    def __init__(self, config: Config, inflight: Inflight) -> None:
        self.inflight = inflight
        self.delay_ns = config.delay_ns
        self.limit = config.max_message_bytes

    @_tracked
    async def Unary(self, request: echo_pb2.Frame, context: Any) -> echo_pb2.Frame:
        if self.delay_ns:
            await asyncio.sleep(self.delay_ns / 1e9)
        return request

    @_tracked
    async def ServerStream(
        self, request: echo_pb2.StreamRequest, context: Any
    ) -> AsyncIterator[echo_pb2.Frame]:
        problem = _check_stream_request(request, self.limit)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        payload = _payload(request.payload_bytes)
        start = time.monotonic_ns() + self.delay_ns
        interval = request.interval_ms * 1_000_000
        for seq in range(request.count):
            due = start + seq * interval
            await _sleep_until(due)
            yield echo_pb2.Frame(
                seq=seq, intended_send_ns=due, sent_ns=time.monotonic_ns(), payload=payload
            )

    @_tracked
    async def ClientStream(
        self, request_iterator: AsyncIterator[echo_pb2.Frame], context: Any
    ) -> echo_pb2.StreamSummary:
        summary = echo_pb2.StreamSummary()
        async for frame in request_iterator:
            _count(summary, frame)
        if self.delay_ns:
            await asyncio.sleep(self.delay_ns / 1e9)
        return summary

    @_tracked
    async def Bidi(
        self, request_iterator: AsyncIterator[echo_pb2.Frame], context: Any
    ) -> AsyncIterator[echo_pb2.Frame]:
        if not self.delay_ns:
            async for frame in request_iterator:
                yield frame
            return
        # Reader task stamps arrivals so each reply is due arrival + delay, independently.
        backlog: asyncio.Queue[tuple[int, echo_pb2.Frame] | None] = asyncio.Queue(BIDI_BACKLOG)

        async def read() -> None:
            try:
                async for frame in request_iterator:
                    await backlog.put((time.monotonic_ns(), frame))
            finally:
                await backlog.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await backlog.get()) is not None:
                await _sleep_until(item[0] + self.delay_ns)
                yield item[1]
            await reader  # surfaces a read error as the call's status
        finally:
            reader.cancel()


async def _serve_aio(config: Config) -> None:
    # Handlers first: a harness may signal the moment it reads the LISTENING line.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = grpc.aio.server(options=config.options())
    inflight = Inflight()
    echo_pb2_grpc.add_EchoServicer_to_server(AioEcho(config, inflight), server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # no stub
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(_reflected_names(), server)
    port = _bind(server, config)
    await server.start()
    announce("grpc", config.host, port)
    await stop.wait()
    log.info("stopping (grace %.1fs)", config.grace_s)
    await health_servicer.enter_graceful_shutdown()
    stopping = asyncio.ensure_future(server.stop(config.grace_s))
    deadline = loop.time() + config.grace_s
    while not stopping.done() and not inflight.idle.is_set() and loop.time() < deadline:
        await asyncio.wait([stopping], timeout=0.02)
    if not stopping.done():
        await server.stop(0)  # a shorter grace than the pending stop() ends it now
    await stopping
    # gRPC finishes cancelled calls in tasks of its own; let them end before asyncio.run()
    # cancels whatever is left (which gRPC would report as an unhandled CancelledError).
    leftovers = asyncio.all_tasks() - {asyncio.current_task()}
    if leftovers:
        await asyncio.wait(leftovers, timeout=1.0)


def _reflected_names() -> tuple[str, ...]:
    return (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)


# --- sync (thread pool) --------------------------------------------------------------------


class SyncEcho(echo_pb2_grpc.EchoServicer):
    """Thread-pool servicer; every wait is on ``stopping`` so shutdown never waits on a sleep."""

    def __init__(self, config: Config, inflight: Inflight, stopping: threading.Event) -> None:
        self.inflight = inflight
        self.delay_ns = config.delay_ns
        self.limit = config.max_message_bytes
        self.stopping = stopping

    def _wait_until(self, deadline_ns: int) -> bool:
        """Sleep until the deadline; False if the server started stopping meanwhile."""
        wait = deadline_ns - time.monotonic_ns()
        if wait > 0:
            return not self.stopping.wait(wait / 1e9)
        return not self.stopping.is_set()

    @_tracked
    def Unary(self, request: echo_pb2.Frame, context: Any) -> echo_pb2.Frame:
        if self.delay_ns:
            self._wait_until(time.monotonic_ns() + self.delay_ns)
        return request

    @_tracked
    def ServerStream(
        self, request: echo_pb2.StreamRequest, context: Any
    ) -> Iterator[echo_pb2.Frame]:
        problem = _check_stream_request(request, self.limit)
        if problem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        payload = _payload(request.payload_bytes)
        start = time.monotonic_ns() + self.delay_ns
        interval = request.interval_ms * 1_000_000
        for seq in range(request.count):
            due = start + seq * interval
            if not self._wait_until(due) or not context.is_active():
                return
            yield echo_pb2.Frame(
                seq=seq, intended_send_ns=due, sent_ns=time.monotonic_ns(), payload=payload
            )

    @_tracked
    def ClientStream(
        self, request_iterator: Iterator[echo_pb2.Frame], context: Any
    ) -> echo_pb2.StreamSummary:
        summary = echo_pb2.StreamSummary()
        for frame in request_iterator:
            _count(summary, frame)
        if self.delay_ns:
            self._wait_until(time.monotonic_ns() + self.delay_ns)
        return summary

    @_tracked
    def Bidi(
        self, request_iterator: Iterator[echo_pb2.Frame], context: Any
    ) -> Iterator[echo_pb2.Frame]:
        if not self.delay_ns:
            yield from request_iterator
            return
        backlog: queue.Queue[tuple[int, echo_pb2.Frame] | None] = queue.Queue(BIDI_BACKLOG)

        def put(item: tuple[int, echo_pb2.Frame] | None) -> bool:
            # Blocks while the backlog is full, but gives up once the call is over, so a
            # cancelled stream cannot strand this thread on a queue nobody drains.
            while context.is_active():
                try:
                    backlog.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    pass
            return False

        def read() -> None:
            try:
                for frame in request_iterator:
                    if not put((time.monotonic_ns(), frame)):
                        return
            except Exception:  # the call was cancelled or the client vanished
                log.debug("bidi reader ended", exc_info=True)
            put(None)

        # A helper thread (not from the pool) reads, so replies are timed from arrivals.
        threading.Thread(target=read, name="bidi-reader", daemon=True).start()
        while True:
            try:
                item = backlog.get(timeout=0.5)
            except queue.Empty:
                if context.is_active() and not self.stopping.is_set():
                    continue
                return
            if item is None:
                return
            if not self._wait_until(item[0] + self.delay_ns) or not context.is_active():
                return
            yield item[1]


def _serve_sync(config: Config, threads: int) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stopping = threading.Event()
    pool = futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc-worker")
    server = grpc.server(pool, options=config.options())
    inflight = Inflight()
    echo_pb2_grpc.add_EchoServicer_to_server(SyncEcho(config, inflight, stopping), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(_reflected_names(), server)
    port = _bind(server, config)
    server.start()
    announce("grpc", config.host, port)
    while not stop.wait(3600):  # the handler runs in this (main) thread and sets the event
        pass
    log.info("stopping (grace %.1fs)", config.grace_s)
    health_servicer.enter_graceful_shutdown()
    done = server.stop(config.grace_s)
    inflight.idle.wait(config.grace_s)
    server.stop(0)  # a shorter grace than the pending stop() ends it now
    done.wait(1)
    stopping.set()  # wake any handler still sleeping on a schedule, so its thread ends
    pool.shutdown(wait=False, cancel_futures=True)
