"""The four gRPC RPC kinds on ``grpc.aio``, timed per message: the asyncio driver of the
stream core. It runs in the gRPC driver process (:mod:`echoswarm.streams.sidecar`), never
under gevent.

Each function runs one *task* of a user and hands every sample to ``sink``; it returns the
failure that ended it (None when it ended cleanly) and never raises for an RPC problem. A
``stop`` event (Locust is stopping the user) ends it early with the same drain as every stream:
replies already on their way are collected for up to the stop-drain time, the rest are recorded
as lost.

* :func:`bidi` → row ``bidi msg``: a :class:`~echoswarm.streams.core.StreamCore` paced by the
  process's :class:`~echoswarm.streams.pacer.AsyncPacer` (or ping-pong), replies read by a
  second task and matched by seq; latency = reply − intended.
* :func:`unary_run` → row ``unary``: one call per message on the same core — paced calls are
  measured from their intended time (a slow call delays the next, which then counts its lag).
* :func:`server_stream` → rows ``server_stream first`` and ``server_stream msg``: frame *i* is
  measured against the request's send time + i·interval on *this* host's clock (the server's
  clock is not comparable), i.e. what the consumer of the stream experiences.
* :func:`client_stream` → row ``client_stream``: the whole upload (first send → summary); the
  summary must count every frame sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc.aio import EOF  # type: ignore[attr-defined]

from echoswarm.measure import Sample, Schedule, Sink, Timer, first_difference, now_ns
from echoswarm.streams import failures
from echoswarm.streams.core import LOST_ON_STOP, STOP_DRAIN_S, StreamConfig, StreamCore
from echoswarm.streams.pacer import AsyncPacer
from protos import echo_pb2

MAX_MESSAGE = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),  # N users are N HTTP/2 connections
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


@dataclass(slots=True)
class CallSpec:
    """What one task runs (crosses from the Locust process as a dict)."""

    kind: str  # unary | server_stream | client_stream | bidi
    prefix: str  # the scenario's name prefix
    user_id: int
    conn_id: int
    payload_bytes: int
    stream: StreamConfig  # bidi/unary: the stream; others: interval, timeout, pingpong
    frames: int  # frames per streaming call (server/client stream)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> CallSpec:
        return cls(
            kind=str(d["kind"]),
            prefix=str(d.get("prefix", "")),
            user_id=int(d["user_id"]),
            conn_id=int(d["conn_id"]),
            payload_bytes=int(d["payload_bytes"]),
            stream=StreamConfig.from_wire(d["stream"]),
            frames=int(d.get("frames", 0)),
        )


class Stop:
    """Set when the Locust user is stopping (one per running task)."""

    __slots__ = ("event", "at_ns")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.at_ns = 0

    def set(self) -> None:
        if not self.event.is_set():
            self.at_ns = now_ns()
            self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


async def open_channel(
    target: str, timeout_s: float, sink: Sink, *, user_id: int, conn_id: int, name: str
) -> tuple[grpc.aio.Channel | None, str | None]:
    """A channel to ``target``, READY (TCP + HTTP/2 handshake) within the timeout; the
    ``connect`` sample times exactly that."""
    timer = Timer()
    channel: grpc.aio.Channel | None = None
    error: str | None = None
    try:
        channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        await asyncio.wait_for(channel.channel_ready(), timeout_s)
    except TimeoutError:
        error = failures.channel_not_ready(timeout_s)
    except Exception as exc:  # a malformed target, for one
        error = f"{type(exc).__name__}: {exc}"
    sink(timer.sample("grpc", name, 0, error, user_id=user_id, conn_id=conn_id))
    if error is not None and channel is not None:
        await channel.close(None)
        channel = None
    return channel, error


async def _first(*aws: Awaitable[Any]) -> None:
    """Wait until the first of ``aws`` completes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()


def own_cancel() -> bool:
    """True when this task is being cancelled (not an RPC that ended CANCELLED: grpc.aio
    raises the same ``CancelledError`` for that)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _sleep_ns(pacer: AsyncPacer, due_ns: int) -> None:
    if due_ns > now_ns():
        await pacer.wait_until(due_ns)


# --------------------------------------------------------------------------------------- bidi
async def bidi(stub: Any, spec: CallSpec, sink: Sink, pacer: AsyncPacer, stop: Stop) -> str | None:
    """One Bidi call carrying a paced or ping-pong stream until it ends."""
    cfg = spec.stream
    payload = bytes(_pattern(spec.payload_bytes))
    core = StreamCore(
        cfg, sink, user_id=spec.user_id, conn_id=spec.conn_id, nbytes=spec.payload_bytes
    )
    call = stub.Bidi()
    replied = asyncio.Event()
    drained = asyncio.Event()
    writing = asyncio.Event()  # a write is in progress (see the stop below)
    frame = echo_pb2.Frame(payload=payload)

    async def receive() -> None:
        read = call.read
        on_reply = core.on_reply
        eof = EOF
        while True:
            reply = await read()
            if reply is eof:
                if not core.drained and not core.closing:
                    core.fail("server ended the call")
                return
            received = now_ns()
            got = reply.payload
            done = on_reply(
                reply.seq,
                reply.intended_send_ns,
                reply.sent_ns,
                received,
                None if got == payload else first_difference(payload, got),
            )
            replied.set()
            if done:
                drained.set()
                return

    async def send() -> None:
        core.start(now_ns())
        write = call.write
        pingpong = cfg.pingpong
        timeout_s = cfg.timeout_s
        while True:
            if pingpong:
                due = core.due_ns(now_ns())
            else:
                due = core.due_ns()
                if due is not None:
                    await _sleep_ns(pacer, due)
            if due is None or stop.is_set():
                break
            replied.clear()
            frame.seq, frame.intended_send_ns, frame.sent_ns = core.take(now_ns())
            writing.set()
            await write(frame)
            writing.clear()
            if stop.is_set():
                return
            if pingpong:
                try:
                    await asyncio.wait_for(replied.wait(), timeout_s)
                except TimeoutError:
                    core.pingpong_timeout(now_ns())
                    return
        if stop.is_set():
            return
        # The stream's length is reached: wait for the outstanding replies up to their timeout.
        core.begin_drain()
        while not core.drained:
            wait_ns = core.drain_wait_ns(now_ns())
            if wait_ns <= 0:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(drained.wait(), wait_ns / 1e9)
        with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
            await call.done_writing()

    receiver = asyncio.ensure_future(receive())
    sender = asyncio.ensure_future(send())
    try:
        await _first(_guard(receiver, core), _guard(sender, core, call), stop.event.wait())
        if stop.is_set():
            if writing.is_set():  # grpc.aio cancels the whole call when a write is cancelled,
                # and every reply in flight with it: let the write finish (the sender then ends)
                await asyncio.wait([sender], timeout=cfg.stop_drain_s)
            sender.cancel()
            core.stop()
            core.begin_drain()
            if not core.drained and not receiver.done():
                await asyncio.wait([receiver], timeout=cfg.stop_drain_s)
            core.lost_on_stop(now_ns())
    finally:
        core.closing = True
        sender.cancel()
        receiver.cancel()
        call.cancel()
        core.finish(now_ns())
    return core.error


async def _guard(task: asyncio.Future[None], core: StreamCore, call: Any = None) -> None:
    """Await a stream task; an RPC error or a crash becomes the stream's error. A write on a
    call that has already ended (``call`` given: the sender) fails with the call's status."""
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if own_cancel():
            raise
        core.fail(failures.CANCELLED)  # grpc.aio raises CancelledError for a CANCELLED RPC
    except grpc.RpcError as exc:
        if not core.closing:
            core.fail(failures.grpc_describe(exc))
    except asyncio.InvalidStateError as exc:
        if call is None or core.closing:
            core.fail(failures.describe(exc))
            return
        code = await call.code()
        core.fail(failures.grpc_status_text(code.name, await call.details() or ""))
    except Exception as exc:
        core.fail(failures.describe(exc))


# -------------------------------------------------------------------------------------- unary
async def unary_run(
    stub: Any, spec: CallSpec, sink: Sink, pacer: AsyncPacer, stop: Stop
) -> str | None:
    """Unary calls one after another, paced (from their intended times) or back to back,
    until the stream's length, a failure or a stop."""
    cfg = spec.stream
    payload = bytes(_pattern(spec.payload_bytes))
    core = StreamCore(cfg, sink, user_id=spec.user_id, conn_id=spec.conn_id, nbytes=len(payload))
    core.start(now_ns())
    stopped = asyncio.ensure_future(stop.event.wait())
    frame = echo_pb2.Frame(payload=payload)
    try:
        while True:
            due = core.due_ns(now_ns())
            if due is None:
                return None
            if due > now_ns():
                await _first(pacer.wait_until(due), asyncio.shield(stopped))
            if stop.is_set():
                return None
            seq, intended, sent = core.take(now_ns())
            frame.seq, frame.intended_send_ns, frame.sent_ns = seq, intended, sent
            call = stub.Unary(frame, timeout=cfg.timeout_s)
            answer = asyncio.ensure_future(_outcome(call))
            await _first(asyncio.shield(answer), asyncio.shield(stopped))
            if not answer.done():  # stopping: the call gets up to the stop-drain time
                await asyncio.wait([answer], timeout=cfg.stop_drain_s)
            if not answer.done():
                answer.cancel()
                call.cancel()
                core.lost_on_stop(now_ns())
                return None
            reply, error = answer.result()
            received = now_ns()
            if error is None:
                error = _frame_error(reply, seq, intended, sent, payload)
                core.on_reply(seq, intended, sent, received, error)
            else:
                core.on_reply(seq, intended, sent, received, error)
                return error
            if stop.is_set():
                return None
    finally:
        stopped.cancel()
        core.finish(now_ns())


async def _outcome(call: Any) -> tuple[Any, str | None]:
    """Await a call: (reply, None) or (None, failure text)."""
    try:
        return await call, None
    except asyncio.CancelledError:
        if own_cancel():
            raise
        return None, failures.CANCELLED  # grpc.aio raises CancelledError for a CANCELLED RPC
    except grpc.RpcError as exc:
        return None, failures.grpc_describe(exc)


def _frame_error(reply: Any, seq: int, intended: int, sent: int, payload: bytes) -> str | None:
    if reply.seq != seq:
        return failures.REPLY_SEQ
    if reply.intended_send_ns != intended or reply.sent_ns != sent:
        return failures.REPLY_STAMPS
    if reply.payload != payload:
        return first_difference(payload, reply.payload)
    return None


# ------------------------------------------------------------------------------ server stream
async def server_stream(
    stub: Any, spec: CallSpec, sink: Sink, pacer: AsyncPacer, stop: Stop
) -> str | None:
    """One ServerStream call: rows ``server_stream first`` and ``server_stream msg``."""
    cfg = spec.stream
    count = spec.frames
    interval_ms = 0 if cfg.pingpong else cfg.interval_ns // 1_000_000
    interval = interval_ms * 1_000_000
    payload = bytes(_pattern(spec.payload_bytes))
    nbytes = len(payload)
    first_name = spec.prefix + "server_stream first"
    msg_name = spec.prefix + "server_stream msg"
    uid, cid = spec.user_id, spec.conn_id
    t0 = now_ns()
    schedule = Schedule(interval, t0)  # frame i is due at t0 + i * interval on our clock
    request = echo_pb2.StreamRequest(
        count=count, payload_bytes=nbytes, interval_ms=interval_ms, sent_ns=t0
    )
    call = stub.ServerStream(request, timeout=count * interval / 1e9 + cfg.timeout_s)
    got = 0
    error: str | None = None

    async def receive() -> None:
        nonlocal got
        read = call.read
        eof = EOF
        while True:
            frame = await read()
            if frame is eof:
                return
            received = now_ns()
            if got == 0:
                sink(
                    Sample(
                        "grpc",
                        first_name,
                        t0,
                        received - t0,
                        nbytes,
                        None,
                        uid,
                        cid,
                        0,
                        0,
                        t0,
                        received,
                    )
                )
            due = schedule.due_ns(got)
            bad = None
            if received - due >= cfg.timeout_ns:
                bad = f"timeout: no frame within {cfg.timeout_s:g} s of its due time"
            elif frame.seq != got:
                bad = failures.FRAME_OUT_OF_ORDER
            elif frame.payload != payload:
                bad = failures.FRAME_PAYLOAD
            sink(
                Sample(
                    "grpc",
                    msg_name,
                    due,
                    received - due,
                    nbytes,
                    bad,
                    uid,
                    cid,
                    got,
                    due,
                    0,
                    received,
                )
            )
            got += 1
            if stop.is_set() and schedule.due_ns(got) > stop.at_ns:
                return  # stopping: every frame due before the stop has arrived

    receiver = asyncio.ensure_future(receive())
    try:
        await _first(asyncio.shield(receiver), stop.event.wait())
        if stop.is_set() and not receiver.done():
            if schedule.due_ns(got) <= stop.at_ns:  # a frame due before the stop is outstanding
                await asyncio.wait([receiver], timeout=cfg.stop_drain_s)
        if receiver.done() and not receiver.cancelled():
            exc = receiver.exception()
            if isinstance(exc, grpc.RpcError):
                error = None if stop.is_set() else failures.grpc_describe(exc)
            elif exc is not None:
                error = failures.describe(exc)
    finally:
        receiver.cancel()
        call.cancel()
    now = now_ns()
    if stop.is_set():
        _lost_frames(
            sink, spec, msg_name, schedule, got, count, stop.at_ns, failures.FRAME_LOST_ON_STOP
        )
        return None
    if got < count:
        reason = error or failures.STREAM_ENDED_EARLY
        _lost_frames(sink, spec, msg_name, schedule, got, count, now, reason)
        if got == 0:
            sink(
                Sample(
                    "grpc", first_name, t0, now - t0, 0, f"lost: {reason}", uid, cid, 0, 0, t0, 0
                )
            )
        return reason
    return None


def _lost_frames(
    sink: Sink,
    spec: CallSpec,
    name: str,
    schedule: Schedule,
    got: int,
    count: int,
    now: int,
    reason: str,
) -> None:
    """Frames due by ``now`` that never came are failures; later ones were never owed."""
    for seq in range(got, count):
        due = schedule.due_ns(seq)
        if due > now:
            break
        sink(
            Sample(
                "grpc",
                name,
                due,
                now - due,
                0,
                f"lost: {reason}",
                spec.user_id,
                spec.conn_id,
                seq,
                due,
                0,
                0,
            )
        )


# ------------------------------------------------------------------------------ client stream
async def client_stream(
    stub: Any, spec: CallSpec, sink: Sink, pacer: AsyncPacer, stop: Stop
) -> str | None:
    """One ClientStream call (row ``client_stream``): paced or as fast as possible. A stop ends
    the upload early; the summary must then count exactly what was sent."""
    cfg = spec.stream
    count = spec.frames
    interval = 0 if cfg.pingpong else cfg.interval_ns
    schedule = Schedule(interval)
    payload = bytes(_pattern(spec.payload_bytes))
    sent = 0

    async def frames() -> AsyncIterator[echo_pb2.Frame]:
        nonlocal sent
        frame = echo_pb2.Frame(payload=payload)
        for seq in range(count):
            due = schedule.due_ns(seq)
            if interval:
                await _first(_sleep_ns(pacer, due), stop.event.wait())
            if stop.is_set():
                return
            frame.seq, frame.intended_send_ns, frame.sent_ns = seq, due, now_ns()
            sent = seq + 1
            yield frame

    timer = Timer()
    timer.start_ns = schedule.t0_ns
    call = stub.ClientStream(frames(), timeout=count * interval / 1e9 + cfg.timeout_s)
    error: str | None = None
    summary: Any = None
    answer = asyncio.ensure_future(_outcome(call))
    try:
        await _first(asyncio.shield(answer), _after_stop(stop, cfg.stop_drain_s))
        if not answer.done():
            error = "lost: " + LOST_ON_STOP
        else:
            summary, error = answer.result()
    finally:
        answer.cancel()
        call.cancel()
    n = sent
    if summary is not None:
        if summary.frames != n or summary.bytes != n * len(payload):
            error = failures.SUMMARY_MISCOUNT
        elif n and (summary.first_seq != 0 or summary.last_seq != n - 1):
            error = failures.SUMMARY_SEQS
    sink(
        timer.sample(
            "grpc",
            spec.prefix + "client_stream",
            n * len(payload),
            error,
            user_id=spec.user_id,
            conn_id=spec.conn_id,
        )
    )
    return error if summary is None and not stop.is_set() else None


async def _after_stop(stop: Stop, drain_s: float) -> None:
    """Completes ``drain_s`` after a stop (a call still running then is lost)."""
    await stop.event.wait()
    await asyncio.sleep(drain_s)


KINDS: dict[str, Callable[..., Awaitable[str | None]]] = {
    "unary": unary_run,
    "server_stream": server_stream,
    "client_stream": client_stream,
    "bidi": bidi,
}


def _pattern(n: int) -> bytes:
    from echoswarm.wire import pattern

    return pattern(n)


__all__ = ["STOP_DRAIN_S", "CallSpec", "KINDS", "Stop", "open_channel"]
