"""What the two gRPC server implementations share: settings, call accounting for shutdown,
binding, and the pieces of the Echo RPCs that do not depend on aio vs threads."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from echoswarm.wire import pattern
from protos import echo_pb2
from servers.common import UsageError, probe_bind

SERVICE_NAME = echo_pb2.DESCRIPTOR.services_by_name["Echo"].full_name
# Head-room for the Frame's other fields when checking a requested payload against the limit.
FRAME_OVERHEAD = 64
# Bounded so a client pipelining into a delayed Bidi stream meets HTTP/2 flow control instead of
# growing the server's memory.
BIDI_BACKLOG = 1024


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


@functools.lru_cache(maxsize=16)
def payload_of(size: int) -> bytes:
    return pattern(size)


def count_frame(summary: echo_pb2.StreamSummary, frame: echo_pb2.Frame) -> None:
    """Fold one uploaded frame into the summary (payloads are not kept)."""
    if summary.frames == 0:
        summary.first_seq = frame.seq
    summary.frames += 1
    summary.bytes += len(frame.payload)
    summary.last_seq = frame.seq


def stream_request_problem(request: echo_pb2.StreamRequest, limit: int) -> str | None:
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


def tracked(method: Callable[..., Any]) -> Any:
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


def bind(server: Any, config: Config) -> int:
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


def reflected_names() -> tuple[str, ...]:
    return (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
