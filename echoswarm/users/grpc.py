"""gRPC users: every RPC kind of ``protos/echo.proto`` with per-message timing.

gRPC's gevent support is switched on here, once, at import (after ``import locust`` has
monkey-patched). Each user opens its own channel in ``on_start`` — after any ``--processes``
fork, never at import — with a local subchannel pool, so N users really are N HTTP/2
connections. The ``connect`` row times channel creation until the channel is READY (TCP +
HTTP/2 handshake), i.e. when the first RPC can go out.

``GrpcUser`` (abstract) runs the RPC kind named by its ``pattern`` attribute:

* ``"unary"`` → row ``unary``. Paced mode issues one call per ``--interval-ms`` and measures
  from the intended call time; pingpong mode calls back to back.
* ``"server_stream"`` → rows ``server_stream first`` (request → first frame) and
  ``server_stream msg``. The server pushes frame *i* at its own ``start + i·interval``; the two
  hosts' clocks are not comparable, so each frame is measured against the same schedule laid
  on the *client's* clock, anchored at the moment the request was sent: latency_i =
  received_i − (request_sent + i·interval). That is the delay the consumer of the stream
  experiences (request one-way + server delay + frame one-way) and, like every paced row,
  keeps counting when the server falls behind its schedule. Frames per call:
  ``--stream-messages``, else ``--stream-seconds`` worth, else 50; pingpong mode asks for
  interval 0 (as fast as possible).
* ``"client_stream"`` → row ``client_stream`` (first send → summary, bytes = payload sent).
  Paced (one frame per interval) or as fast as possible; the summary must count every frame.
* ``"bidi"`` → row ``bidi msg``: the request iterator (consumed by gRPC's sender greenlet)
  yields frame *i* at ``t0 + i·interval`` and the user's greenlet reads replies, matched by seq
  (:class:`~echoswarm.users._stream.Stream`); latency = reply − intended, sender lag and
  service time in the sample. Pingpong mode yields the next frame only after the reply.

Frame size: the payload is ``--frame-bytes - 32`` bytes, so a serialized Frame (payload plus
about 30 bytes of seq/timestamps) is about as large on the wire as a ws/tcp frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
import locust  # noqa: F401,I001  (gevent monkey-patching before grpc is imported)
from gevent import GreenletExit
from locust import task

from echoswarm.measure import Sample, Schedule, Timer, first_difference, next_conn_id, now_ns
from echoswarm.users._stream import STOP_DRAIN_S, Stream, describe, stream_config
from echoswarm.users._user import EchoUser
from echoswarm.wire import HEADER_SIZE, pattern
from protos import echo_pb2, echo_pb2_grpc

grpc_gevent.init_gevent()

MAX_MESSAGE = 64 * 1024 * 1024
DEFAULT_STREAM_FRAMES = 50
UNAVAILABLE = "unavailable (server down or connection lost)"


def grpc_describe(exc: BaseException) -> str:
    """A stable failure text for an RPC error: the status code, and details when short."""
    code = getattr(exc, "code", None)
    status = code() if callable(code) else None
    if status is None:
        return f"{type(exc).__name__}: {exc}"
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout (deadline exceeded)"
    details_fn = getattr(exc, "details", None)
    details = (details_fn() if callable(details_fn) else "") or ""
    first = details.splitlines()[0] if details else ""
    if status == grpc.StatusCode.UNAVAILABLE:
        return UNAVAILABLE
    return f"{status.name.lower()}: {first[:120]}" if first else status.name.lower()


_users_started = 0


def _grow_threadpool() -> None:
    """Give gevent's threadpool room for every gRPC user of this process.

    In gevent mode grpcio waits for its completion queues in gevent's threadpool (10 threads
    by default); with more streams than threads, replies queue for a free thread (measured:
    30 bidi streams, latency p99 209 ms with 10 threads, 53 ms with 200).
    """
    global _users_started
    _users_started += 1
    pool = gevent.get_hub().threadpool
    want = 2 * _users_started + 10
    if pool.maxsize < want:
        pool.maxsize = want


class GrpcUser(EchoUser):
    """Abstract gRPC echo user; ``pattern`` is one of unary, server_stream, client_stream,
    bidi."""

    abstract = True
    transport = "grpc"
    pattern = "bidi"

    def on_start(self) -> None:
        super().on_start()
        _grow_threadpool()
        self.channel: grpc.Channel | None = None
        self.stub: Any = None
        self.conn_id = 0
        self.payload = pattern(self.opts.frame_bytes - HEADER_SIZE)
        self.seq = 0
        self.schedule: Schedule | None = None
        self.stopping = False  # Locust is stopping this user (a call is being wound down)
        self._pending_raise = False

    def on_stop(self) -> None:
        self._drop_channel()

    @task
    def run_pattern(self) -> None:
        if self.channel is None and not self.open_channel():
            return
        kind = self.pattern
        if kind == "unary":
            self.unary()
        elif kind == "server_stream":
            self.server_stream()
        elif kind == "client_stream":
            self.client_stream()
        else:
            self.bidi()

    # ----------------------------------------------------------------- channel
    def open_channel(self) -> bool:
        """Open this user's channel and wait until it is READY (row ``connect``)."""
        self.conn_id = next_conn_id()
        timer = Timer()
        channel = grpc.insecure_channel(
            self.opts.grpc_target,
            options=[
                ("grpc.use_local_subchannel_pool", 1),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.max_receive_message_length", MAX_MESSAGE),
            ],
        )
        error: str | None = "interrupted"
        ready = grpc.channel_ready_future(channel)
        try:
            ready.result(timeout=self.opts.reply_timeout_s)
            error = None
        except grpc.FutureTimeoutError:
            error = f"not ready within {self.opts.reply_timeout_s:g} s (server down or unreachable)"
        except Exception as exc:  # a malformed target, for one
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if error is not None:
                # Close explicitly, even when a stop interrupted us: a channel left to the
                # garbage collector closes itself inside __del__, which can deadlock under
                # gevent (seen: a run hanging at stop).
                ready.cancel()
                channel.close()
        self.sink(self._timed(timer, "connect", 0, error))
        if error is not None:
            self.backoff.wait()
            return False
        self.channel = channel
        self.stub = echo_pb2_grpc.EchoStub(channel)
        return True

    def _drop_channel(self) -> None:
        channel = getattr(self, "channel", None)  # (on_start may have stopped early)
        if channel is not None:
            channel.close()
        self.channel = None
        self.stub = None

    def _after(self, error: str | None) -> None:
        """After a call: reset the backoff, or drop a lost connection and back off."""
        if error is None:
            self.backoff.reset()
            return
        if error.startswith(UNAVAILABLE):
            self._drop_channel()  # the next task reconnects (and records a connect row)
        if not self.stopping:
            self.backoff.wait()

    def _timed(self, timer: Timer, name: str, nbytes: int, error: str | None) -> Sample:
        return timer.sample(
            "grpc", self.name_prefix + name, nbytes, error, user_id=self.user_id,
            conn_id=self.conn_id,
        )  # fmt: skip

    def _frames_per_call(self) -> int:
        opts = self.opts
        if opts.stream_messages:
            return int(opts.stream_messages)
        if opts.stream_seconds and opts.interval_ms:
            return max(1, int(opts.stream_seconds * 1000 / opts.interval_ms))
        return DEFAULT_STREAM_FRAMES

    @property
    def _timeout_s(self) -> float:
        return float(self.opts.reply_timeout_s)

    # ------------------------------------------------------------------- unary
    def unary(self) -> None:
        """One Unary call; paced mode keeps to the schedule and measures from it."""
        paced = self.opts.mode == "paced" and self.opts.interval_ms > 0
        if paced:
            if self.schedule is None:
                self.schedule = Schedule(int(self.opts.interval_ms * 1_000_000))
            delay = self.schedule.wait_s(self.seq)
            if delay:
                gevent.sleep(delay)
        seq = self.seq
        self.seq += 1
        sent = now_ns()
        intended = self.schedule.due_ns(seq) if paced and self.schedule else sent
        frame = echo_pb2.Frame(
            seq=seq, intended_send_ns=intended, sent_ns=sent, payload=self.payload
        )
        future = self.stub.Unary.future(frame, timeout=self._timeout_s)
        reply, error = self._outcome(future.result, future.cancel)
        received = now_ns()
        if reply is not None:
            error = _frame_error(reply, seq, intended, sent, self.payload)
        self.sink(
            Sample(
                "grpc", self.name_prefix + "unary", intended, received - intended,
                len(self.payload), error, self.user_id, self.conn_id, seq, intended, sent,
                received if error is None else 0,
            )
        )  # fmt: skip
        if reply is None:
            self.schedule = None  # a new schedule after the failure
        self._after(error if reply is None else None)
        self._reraise_stop()

    def _outcome(
        self, wait: Callable[[], Any], cancel: Callable[[], Any]
    ) -> tuple[Any, str | None]:
        """Wait for a call's result → (result, None) or (None, failure text).

        If Locust stops the user meanwhile, the call still gets up to the stop-drain time to
        finish (its result is recorded normally), else it is cancelled and recorded as lost;
        then the stop proceeds. Waiting on a gRPC future can be resumed after the interruption
        (unlike a response iterator), which is why unary/client-stream calls use futures.
        """
        try:
            return wait(), None
        except grpc.RpcError as exc:
            return None, grpc_describe(exc)
        except GreenletExit:
            self.stopping = True
            result: tuple[Any, str | None] = (None, "lost: test stopped before the reply arrived")
            with gevent.Timeout(min(STOP_DRAIN_S, self._timeout_s), False):
                try:
                    result = wait(), None
                except grpc.RpcError as exc:
                    result = None, grpc_describe(exc)
            cancel()
            self._pending_raise = True
            return result

    def _reraise_stop(self) -> None:
        """Let Locust's stop continue once a call interrupted by it has been recorded."""
        if self._pending_raise:
            self._pending_raise = False
            raise GreenletExit()

    # ----------------------------------------------------------- server stream
    def server_stream(self) -> None:
        """One ServerStream call: rows ``server_stream first`` and ``server_stream msg``."""
        count = self._frames_per_call()
        paced = self.opts.mode == "paced"
        interval_ms = int(self.opts.interval_ms) if paced else 0
        interval = interval_ms * 1_000_000
        payload = self.payload
        nbytes = len(payload)
        name_msg = self.name_prefix + "server_stream msg"
        sink = self.sink
        user_id, conn_id = self.user_id, next_conn_id()  # each call is a stream of its own
        t0 = now_ns()
        request = echo_pb2.StreamRequest(
            count=count, payload_bytes=nbytes, interval_ms=interval_ms, sent_ns=t0
        )
        call = self.stub.ServerStream(request, timeout=count * interval / 1e9 + self._timeout_s)
        state: dict[str, Any] = {"got": 0, "error": None, "stop_at": 0}

        def receive() -> None:
            got = 0
            try:
                for frame in call:
                    received = now_ns()
                    if got == 0:
                        sink(
                            Sample(
                                "grpc", self.name_prefix + "server_stream first", t0,
                                received - t0, nbytes, None, user_id, conn_id, 0, 0, t0, received,
                            )
                        )  # fmt: skip
                    due = t0 + got * interval
                    bad = None
                    if frame.seq != got:
                        bad = "out of order: frame seq differs from its position in the stream"
                    elif frame.payload != payload:
                        bad = "frame payload differs from the requested pattern"
                    sink(
                        Sample(
                            "grpc", name_msg, due, received - due, nbytes, bad, user_id,
                            conn_id, got, due, 0, received,
                        )
                    )  # fmt: skip
                    got += 1
                    state["got"] = got
                    stop_at = state["stop_at"]
                    if stop_at and t0 + got * interval > stop_at:
                        return  # stopping: every frame due before the stop has arrived
            except grpc.RpcError as exc:
                if not state["stop_at"]:
                    state["error"] = grpc_describe(exc)
            except Exception as exc:  # a spawned greenlet must not die with a traceback
                state["error"] = describe(exc)

        receiver = gevent.spawn(receive)
        try:
            receiver.join()
        except GreenletExit:
            stop_at = now_ns()
            state["stop_at"] = stop_at
            if t0 + int(state["got"] or 0) * interval <= stop_at:  # a due frame is outstanding
                receiver.join(timeout=min(STOP_DRAIN_S, self._timeout_s))
            call.cancel()
            receiver.kill()
            self._lost_frames(
                name_msg, conn_id, t0, interval, int(state["got"] or 0), count, stop_at
            )
            raise
        finally:
            call.cancel()
        got = int(state["got"] or 0)
        error = state["error"]
        if got < count:
            reason = str(error or "stream ended early")
            self._lost_frames(name_msg, conn_id, t0, interval, got, count, now_ns(), reason)
            if got == 0:
                sink(
                    Sample(
                        "grpc", self.name_prefix + "server_stream first", t0, now_ns() - t0, 0,
                        f"lost: {reason}", user_id, conn_id, 0, 0, t0, 0,
                    )
                )  # fmt: skip
            self._after(reason)
        else:
            self._after(None)

    def _lost_frames(
        self,
        name: str,
        conn_id: int,
        t0: int,
        interval: int,
        got: int,
        count: int,
        now: int,
        reason: str = "test stopped before the frame arrived",
    ) -> None:
        """Frames that were due by ``now`` but never came are failures; later ones are not
        (they were never owed)."""
        for seq in range(got, count):
            due = t0 + seq * interval
            if due > now:
                break
            self.sink(
                Sample(
                    "grpc", name, due, now - due, 0, f"lost: {reason}", self.user_id, conn_id,
                    seq, due, 0, 0,
                )
            )  # fmt: skip

    # ----------------------------------------------------------- client stream
    def client_stream(self) -> None:
        """One ClientStream call (row ``client_stream``): paced or as fast as possible.

        A stop ends the upload early; the summary must then count exactly what was sent.
        """
        count = self._frames_per_call()
        paced = self.opts.mode == "paced" and self.opts.interval_ms > 0
        interval = int(self.opts.interval_ms * 1_000_000) if paced else 0
        schedule = Schedule(interval)
        payload = self.payload
        frame = echo_pb2.Frame(payload=payload)
        sent = [0]

        def frames() -> Iterator[echo_pb2.Frame]:
            for seq in range(count):
                delay = schedule.wait_s(seq)
                if delay:
                    gevent.sleep(delay)
                if self.stopping:
                    return
                frame.seq = seq
                frame.intended_send_ns = schedule.due_ns(seq)
                frame.sent_ns = now_ns()
                sent[0] = seq + 1
                yield frame  # gRPC serializes it before asking for the next one

        timer = Timer()
        timer.start_ns = schedule.t0_ns
        future = self.stub.ClientStream.future(
            frames(), timeout=count * interval / 1e9 + self._timeout_s
        )
        summary, error = self._outcome(future.result, future.cancel)
        n = sent[0]
        if summary is not None:
            if summary.frames != n or summary.bytes != n * len(payload):
                error = "summary does not count every frame sent"
            elif n and (summary.first_seq != 0 or summary.last_seq != n - 1):
                error = "summary first/last seq differ from what was sent"
        self.sink(self._timed(timer, "client_stream", n * len(payload), error))
        self._after(error if summary is None else None)
        self._reraise_stop()

    # -------------------------------------------------------------------- bidi
    def bidi(self) -> None:
        """One Bidi call carrying a paced or ping-pong stream until it ends.

        The replies are read in a greenlet of their own: a gRPC response iterator cannot be
        resumed once a kill interrupted it, and the stop must still collect replies in flight.
        """
        cfg = stream_config(self.opts, "grpc", self.name_prefix + "bidi msg")
        payload = self.payload
        stream = Stream(
            cfg, self.sink, user_id=self.user_id, conn_id=next_conn_id(), nbytes=len(payload)
        )
        frame = echo_pb2.Frame(payload=payload)
        calls: list[Any] = []

        def requests() -> Iterator[echo_pb2.Frame]:
            for seq, intended, sent in stream.ticks():
                frame.seq = seq
                frame.intended_send_ns = intended
                frame.sent_ns = sent
                yield frame  # serialized by gRPC before the next next()
            # A ping-pong timeout (error set) or replies overdue after the last send: end the
            # call now rather than wait for the server to finish it; the receiver stops.
            if (stream.error is not None or not stream.drain_after_send()) and calls:
                stream.closing = True
                calls[0].cancel()

        call = self.stub.Bidi(requests())
        calls.append(call)
        on_reply = stream.on_reply

        def receive() -> None:
            try:
                for reply in call:
                    received = now_ns()
                    got = reply.payload
                    on_reply(
                        reply.seq, reply.intended_send_ns, reply.sent_ns, received,
                        None if got == payload else first_difference(payload, got),
                    )  # fmt: skip
                    if stream.draining and not stream.inflight:
                        return
            except grpc.RpcError as exc:
                if not stream.closing:
                    stream.error = stream.error or grpc_describe(exc)
            except Exception as exc:  # a spawned greenlet must not die with a traceback
                stream.error = stream.error or describe(exc)

        receiver = gevent.spawn(receive)
        try:
            receiver.join()
        except GreenletExit:
            stream.drain_on_stop(receiver.join)
            raise
        finally:
            stream.closing = True
            call.cancel()
            receiver.kill()
            stream.finish()
        self._after(stream.error)


def _frame_error(reply: Any, seq: int, intended: int, sent: int, payload: bytes) -> str | None:
    if reply.seq != seq:
        return "reply seq differs from the request's"
    if reply.intended_send_ns != intended or reply.sent_ns != sent:
        return "echo mismatch in the timestamps"
    if reply.payload != payload:
        return first_difference(payload, reply.payload)
    return None
