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

log = logging.getLogger("servers.grpc")


class SyncEcho(echo_pb2_grpc.EchoServicer):
    """Thread-pool servicer; every wait is on ``stopping`` so shutdown never waits on a sleep."""

    def __init__(
        self, config: shared.Config, inflight: shared.Inflight, stopping: threading.Event
    ) -> None:
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
        payload = shared.payload_of(request.payload_bytes)
        start = time.monotonic_ns() + self.delay_ns
        interval = request.interval_ms * 1_000_000
        for seq in range(request.count):
            due = start + seq * interval
            if not self._wait_until(due) or not context.is_active():
                return
            yield echo_pb2.Frame(
                seq=seq, intended_send_ns=due, sent_ns=time.monotonic_ns(), payload=payload
            )

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
        backlog: queue.Queue[tuple[int, echo_pb2.Frame] | None] = queue.Queue(shared.BIDI_BACKLOG)

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


def serve(config: shared.Config, threads: int) -> None:
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
