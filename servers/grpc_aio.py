"""``--impl aio``: the Echo service on ``grpc.aio`` (one event loop, no thread per call)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos import echo_pb2, echo_pb2_grpc
from servers import grpc_shared as shared
from servers.common import announce
from servers.held_bytes import AsyncHeldBytes

log = logging.getLogger("servers.grpc")


async def _sleep_until(deadline_ns: int) -> None:
    wait = deadline_ns - time.monotonic_ns()
    if wait > 0:
        await asyncio.sleep(wait / 1e9)


class AioEcho(echo_pb2_grpc.EchoServicer):
    def __init__(self, config: shared.Config, inflight: shared.Inflight) -> None:
        self.inflight = inflight
        self.delay_ns = config.delay_ns
        self.limit = config.max_message_bytes
        self.delay_buffer = config.delay_buffer_bytes
        self.budget = shared.StreamBudget(config.stream_memory_bytes)

    @shared.tracked
    async def Unary(self, request: echo_pb2.Frame, context: Any) -> echo_pb2.Frame:
        if self.delay_ns:
            await asyncio.sleep(self.delay_ns / 1e9)
        return request

    @shared.tracked
    async def ServerStream(self, request: echo_pb2.StreamRequest, context: Any) -> None:
        # A coroutine writing with context.write (not an async generator): a client cancel then
        # lands in this frame, so the budget is given back at once, not when a suspended
        # generator happens to be collected.
        problem = shared.stream_request_problem(request, self.limit)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        charge = self.budget.charge(request)
        if not self.budget.take(charge):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self.budget.refusal(request))
        try:
            start = time.monotonic_ns() + self.delay_ns
            interval = request.interval_ms * 1_000_000
            frame = shared.stream_frame(request.payload_bytes)
            for seq in range(request.count):
                due = start + seq * interval
                await _sleep_until(due)
                frame.seq, frame.intended_send_ns, frame.sent_ns = seq, due, time.monotonic_ns()
                await context.write(frame)
        finally:
            self.budget.give(charge)

    @shared.tracked
    async def ClientStream(
        self, request_iterator: AsyncIterator[echo_pb2.Frame], context: Any
    ) -> echo_pb2.StreamSummary:
        summary = echo_pb2.StreamSummary()
        async for frame in request_iterator:
            shared.count_frame(summary, frame)
        if self.delay_ns:
            await asyncio.sleep(self.delay_ns / 1e9)
        return summary

    @shared.tracked
    async def Bidi(
        self, request_iterator: AsyncIterator[echo_pb2.Frame], context: Any
    ) -> AsyncIterator[echo_pb2.Frame]:
        if not self.delay_ns:
            async for frame in request_iterator:
                yield frame
            return
        # Reader task stamps arrivals so each reply is due arrival + delay, independently; it
        # stops reading while the stream holds --delay-buffer-bytes (see servers.held_bytes).
        backlog: asyncio.Queue[tuple[int, int, echo_pb2.Frame] | None] = asyncio.Queue()
        held = AsyncHeldBytes(self.delay_buffer)
        frames = aiter(request_iterator)

        async def read() -> None:
            try:
                while True:
                    await held.wait_for_room()
                    frame = await anext(frames, None)
                    if frame is None:
                        return
                    size = frame.ByteSize()
                    held.hold(size)
                    backlog.put_nowait((time.monotonic_ns(), size, frame))
            finally:
                backlog.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await backlog.get()) is not None:
                arrived, size, frame = item
                await _sleep_until(arrived + self.delay_ns)
                yield frame
                held.release(size)
            await reader  # surfaces a read error as the call's status
        finally:
            reader.cancel()


async def serve(config: shared.Config) -> None:
    shared.quiet_client_cancels()
    # Handlers first: a harness may signal the moment it reads the LISTENING line.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = grpc.aio.server(options=config.options())
    inflight = shared.Inflight()
    echo_pb2_grpc.add_EchoServicer_to_server(AioEcho(config, inflight), server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # no stub
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", shared.SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(shared.reflected_names(), server)
    port = shared.bind(server, config)
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
