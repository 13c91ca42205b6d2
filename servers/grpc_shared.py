"""What the two gRPC server implementations share: settings, call accounting for shutdown,
binding, the ServerStream memory budget, quiet client cancels, and the pieces of the Echo RPCs
that do not depend on aio vs threads."""

from __future__ import annotations

import functools
import inspect
import logging
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
# What one ServerStream call holds while it streams, in payloads: its Frame (protobuf copies the
# payload in), the Frame's encoding, and gRPC core's copy of the message being sent.
STREAM_CHARGE = 3
DEFAULT_STREAM_MEMORY = 256 * 1024 * 1024


@dataclass(frozen=True)
class Config:
    """The server's settings, as both implementations need them."""

    host: str
    port: int
    delay_ns: int
    max_message_bytes: int
    grace_s: float
    handshake_timeout_s: float
    stream_memory_bytes: int = DEFAULT_STREAM_MEMORY
    delay_buffer_bytes: int = 4 * 1024 * 1024

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


def stream_frame(payload_bytes: int) -> echo_pb2.Frame:
    """The one Frame a ServerStream call sends over and over (seq and stamps set per send).

    Built per call and never cached: a cache keyed by size let a handful of ~10-byte requests
    pin a GiB. Reusing one Frame is safe because both gRPC stacks serialise a message before
    the handler is resumed for the next one.
    """
    return echo_pb2.Frame(payload=pattern(payload_bytes))


class StreamBudget:
    """The memory all ServerStream calls may hold at once (``--stream-memory-bytes``).

    A call is charged ``STREAM_CHARGE × payload_bytes`` for as long as it runs; a call that does
    not fit is refused at once with RESOURCE_EXHAUSTED (a visible failure, not a silent wait
    that would distort the latency it measures). So however many clients ask for however large
    frames, ServerStream never holds more than the budget.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    @staticmethod
    def charge(request: echo_pb2.StreamRequest) -> int:
        return STREAM_CHARGE * (request.payload_bytes + FRAME_OVERHEAD)

    def take(self, amount: int) -> bool:
        with self._lock:
            if self.used + amount > self.limit:
                return False
            self.used += amount
            return True

    def give(self, amount: int) -> None:
        with self._lock:
            self.used -= amount

    def refusal(self, request: echo_pb2.StreamRequest) -> str:
        amount = self.charge(request)
        if amount > self.limit:
            return (
                f"payload_bytes {request.payload_bytes} needs {amount} bytes of stream memory, "
                f"more than this server's whole budget ({self.limit}, --stream-memory-bytes)"
            )
        return (
            f"server busy: ServerStream calls already hold {self.used} of {self.limit} bytes "
            f"(--stream-memory-bytes); this one needs {amount}"
        )


class QuietClientCancels(logging.Filter):
    """grpc.aio logs ``ExecuteBatchError raised in core by servicer method`` as an ERROR with a
    traceback when a reply cannot be written because the client already cancelled or reset the
    call. grpc means to ignore exactly that case (it checks whether the client closed), but the
    check races with the failed write, so most cancels of a busy stream get logged. The call is
    over either way and the client has its status: keep it to one DEBUG line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if type(exc).__name__ != "ExecuteBatchError":
            return True
        if not logging.getLogger("servers.grpc").isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.msg = f"call ended by the client: {record.getMessage()}"
        record.args = ()
        record.exc_info = None
        return True


def quiet_client_cancels() -> None:
    logging.getLogger("grpc._cython.cygrpc").addFilter(QuietClientCancels())


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
