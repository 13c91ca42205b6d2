"""``--impl sync``: the Echo service on grpcio's thread-pool server (one thread per open call)."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos import echo_pb2, echo_pb2_grpc
from servers import grpc_shared as shared
from servers.common import announce
from servers.held_bytes import HeldBytes

log = logging.getLogger("servers.grpc")


class SyncEcho(echo_pb2_grpc.EchoServicer):
    """Thread-pool servicer; every wait is on ``stopping`` so shutdown never waits on a sleep."""

    def __init__(
        self, config: shared.Config, inflight: shared.Inflight, stopping: threading.Event
    ) -> None:
        self.inflight = inflight
        self.delay_ns = config.delay_ns
        self.limit = config.max_message_bytes
        self.delay_buffer = config.delay_buffer_bytes
        self.budget = shared.StreamBudget(config.stream_memory_bytes)
        self.stopping = stopping

    def _wait_until(self, deadline_ns: int) -> bool:
        """Sleep until the deadline; False if the server started stopping meanwhile."""
        wait = deadline_ns - time.monotonic_ns()
        if wait > 0:
            return not self.stopping.wait(wait / 1e9)
        return not self.stopping.is_set()

    @shared.tracked
    def Unary(self, request: echo_pb2.Frame, context: Any) -> echo_pb2.Frame:
        if self.delay_ns:
            self._wait_until(time.monotonic_ns() + self.delay_ns)
        return request

    @shared.tracked
    def ServerStream(
        self, request: echo_pb2.StreamRequest, context: Any
    ) -> Iterator[echo_pb2.Frame]:
        problem = shared.stream_request_problem(request, self.limit)
        if problem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        charge = self.budget.charge(request)
        if not self.budget.take(charge):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self.budget.refusal(request))
        # The budget goes back when the call ends: grpc stops iterating a cancelled call and
        # drops the generator, which runs this finally (CPython closes it when released).
        try:
            start = time.monotonic_ns() + self.delay_ns
            interval = request.interval_ms * 1_000_000
            frame = shared.stream_frame(request.payload_bytes)
            for seq in range(request.count):
                due = start + seq * interval
                if not self._wait_until(due) or not context.is_active():
                    return
                frame.seq, frame.intended_send_ns, frame.sent_ns = seq, due, time.monotonic_ns()
                yield frame
        finally:
            self.budget.give(charge)

    @shared.tracked
    def ClientStream(
        self, request_iterator: Iterator[echo_pb2.Frame], context: Any
    ) -> echo_pb2.StreamSummary:
        summary = echo_pb2.StreamSummary()
        for frame in request_iterator:
            shared.count_frame(summary, frame)
        if self.delay_ns:
            self._wait_until(time.monotonic_ns() + self.delay_ns)
        return summary

    @shared.tracked
    def Bidi(
        self, request_iterator: Iterator[echo_pb2.Frame], context: Any
    ) -> Iterator[echo_pb2.Frame]:
        if not self.delay_ns:
            yield from request_iterator
            return
        # The reader stops reading while the stream holds --delay-buffer-bytes (see
        # servers.held_bytes), so the queue itself needs no bound.
        backlog: queue.SimpleQueue[tuple[int, int, echo_pb2.Frame] | None] = queue.SimpleQueue()
        held = HeldBytes(self.delay_buffer)

        def room() -> bool:
            # Gives up once the call is over, so a cancelled stream cannot strand this thread.
            while context.is_active():
                if held.wait_for_room(timeout=0.5):
                    return True
            return False

        def read() -> None:
            try:
                while room():
                    frame = next(request_iterator, None)
                    if frame is None:
                        break
                    size = frame.ByteSize()
                    held.hold(size)
                    backlog.put((time.monotonic_ns(), size, frame))
            except Exception as exc:  # the call was cancelled or the client vanished
                log.debug("bidi reader ended: %s: %s", type(exc).__name__, exc)
            backlog.put(None)

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
            arrived, size, frame = item
            if not self._wait_until(arrived + self.delay_ns) or not context.is_active():
                return
            yield frame
            held.release(size)


def serve(config: shared.Config, threads: int) -> None:
    shared.quiet_client_cancels()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stopping = threading.Event()
    pool = futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc-worker")
    server = grpc.server(pool, options=config.options())
    inflight = shared.Inflight()
    echo_pb2_grpc.add_EchoServicer_to_server(SyncEcho(config, inflight, stopping), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", shared.SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(shared.reflected_names(), server)
    port = shared.bind(server, config)
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
