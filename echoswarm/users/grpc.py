"""gRPC users: every RPC kind of ``protos/echo.proto`` with per-message timing.

The RPCs do not run here. Each load process has one gRPC driver process
(:mod:`echoswarm.streams.sidecar`: ``grpc.aio`` on a plain asyncio loop, no gevent), and a
``GrpcUser`` is its remote control: the user keeps Locust's life cycle (spawn, stop, rebalance,
web UI, ``--processes``, master/worker) and its reconnect backoff; the driver opens the user's
channel and runs each task's calls, timing every message next to the socket, and sends the
samples back in batches (:mod:`echoswarm.users.grpc_driver`). Why not grpcio's gevent mode:
it added 8-30 ms to every message (docs/ARCHITECTURE.md).

Each user opens its own channel (``on_start`` or after a lost connection) with a local
subchannel pool, so N users really are N HTTP/2 connections. The ``connect`` row times channel
creation until the channel is READY (TCP + HTTP/2 handshake), i.e. when the first RPC can go out.

``GrpcUser`` (abstract) runs the RPC kind named by its ``pattern`` attribute:

* ``"unary"`` → row ``unary``. Paced mode issues one call per ``--interval-ms`` and measures
  from the intended call time; pingpong mode calls back to back. A task runs calls until the
  stream's length (``--stream-seconds``/``--stream-messages``), a failure or the stop.
* ``"server_stream"`` → rows ``server_stream first`` (request → first frame) and
  ``server_stream msg``. The server pushes frame *i* at its own ``start + i·interval``; the two
  hosts' clocks are not comparable, so each frame is measured against the same schedule laid
  on the *client's* clock, anchored at the moment the request was sent: latency_i =
  received_i − (request_sent + i·interval). That is the delay the consumer of the stream
  experiences and, like every paced row, keeps counting when the server falls behind. Frames
  per call: ``--stream-messages``, else ``--stream-seconds`` worth, else 50; pingpong mode asks
  for interval 0 (as fast as possible).
* ``"client_stream"`` → row ``client_stream`` (first send → summary, bytes = payload sent).
  Paced (one frame per interval) or as fast as possible; the summary must count every frame.
* ``"bidi"`` → row ``bidi msg``: frame *i* leaves at ``t0 + i·interval`` and replies are read
  independently, matched by seq (the stream core); latency = reply − intended, sender lag and
  service time in the sample. Pingpong mode sends the next frame only after the reply.

Frame size: the payload is ``--frame-bytes - 32`` bytes, so a serialized Frame (payload plus
about 30 bytes of seq/timestamps) is about as large on the wire as a ws/tcp frame.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import gevent
import locust  # noqa: F401,I001  (gevent monkey-patching first)
from gevent import GreenletExit
from locust import events, task
from locust.runners import MasterRunner

from echoswarm.measure import next_conn_id
from echoswarm.streams.core import StreamConfig, stream_config
from echoswarm.streams.failures import DRIVER_GONE, UNAVAILABLE
from echoswarm.users.base import EchoUser
from echoswarm.users.grpc_driver import DriverError, driver
from echoswarm.wire import HEADER_SIZE

log = logging.getLogger("echoswarm.users.grpc")
DEFAULT_STREAM_FRAMES = 50
ANSWER_GRACE_S = 10.0
"""How much longer than the call's own bound the user waits for the driver's answer."""


class GrpcUser(EchoUser):
    """Abstract gRPC echo user; ``pattern`` is one of unary, server_stream, client_stream,
    bidi."""

    abstract = True
    transport = "grpc"
    pattern = "bidi"

    def on_start(self) -> None:
        super().on_start()
        self.channel_id: int | None = None
        self.conn_id = 0

    def on_stop(self) -> None:
        self._drop_channel()

    @task
    def run_pattern(self) -> None:
        if self.channel_id is None and not self.open_channel():
            return
        assert self.channel_id is not None
        kind = self.pattern
        opts = self.opts
        own_stream = kind in ("bidi", "server_stream")  # each call is a stream of its own
        spec = {
            "kind": kind,
            "prefix": self.name_prefix,
            "user_id": self.user_id,
            "conn_id": next_conn_id() if own_stream else self.conn_id,
            "payload_bytes": opts.frame_bytes - HEADER_SIZE,
            "stream": self._stream_config(kind).as_wire(),
            "frames": self._frames_per_call(),
        }
        d = driver()
        req = d.call(self.channel_id, spec, self.sink)
        try:
            error = req.wait()
        except GreenletExit:
            # Locust is stopping this user: the driver drains the call (replies already on
            # their way are still recorded, the rest counted as lost) before the user ends.
            d.stop(req)
            req.wait(timeout=opts.reply_timeout_s + ANSWER_GRACE_S)
            raise
        self._after(error)

    def _stream_config(self, kind: str) -> StreamConfig:
        cfg = stream_config(self.opts, "grpc", self.name_prefix + kind)
        if kind == "bidi":
            return replace(cfg, name=self.name_prefix + "bidi msg")
        if kind == "unary":  # calls go on until a failure or the stop, on one schedule
            return replace(cfg, max_messages=None, duration_ns=None)
        return cfg

    def _frames_per_call(self) -> int:
        opts = self.opts
        if opts.stream_messages:
            return int(opts.stream_messages)
        if opts.stream_seconds and opts.interval_ms:
            return max(1, int(opts.stream_seconds * 1000 / opts.interval_ms))
        return DEFAULT_STREAM_FRAMES

    # ----------------------------------------------------------------- channel
    def open_channel(self) -> bool:
        """Open this user's channel and wait until it is READY (row ``connect``)."""
        self.conn_id = next_conn_id()
        try:
            d = driver()
        except DriverError as exc:
            self.environment.events.request.fire(
                request_type="grpc", name=self.name_prefix + "connect", response_time=0,
                response_length=0, exception=exc, context={},
            )  # fmt: skip
            self.backoff_wait()
            return False
        timeout_s = float(self.opts.reply_timeout_s)
        req = d.open(
            self.opts.grpc_target, timeout_s, self.sink, user_id=self.user_id,
            conn_id=self.conn_id, name=self.name_prefix + "connect",
        )  # fmt: skip
        try:
            error = req.wait(timeout=timeout_s + ANSWER_GRACE_S)
        except GreenletExit:
            d.close_channel(req.rid)  # closed by the driver as soon as it is open
            raise
        if error is not None:
            self.backoff_wait()
            return False
        self.channel_id = req.rid
        return True

    def _drop_channel(self) -> None:
        channel_id = getattr(self, "channel_id", None)  # (on_start may have stopped early)
        self.channel_id = None
        if channel_id is not None:
            try:
                driver().close_channel(channel_id)
            except DriverError:
                pass

    def _after(self, error: str | None) -> None:
        """After a task: reset the backoff, or drop a lost connection and back off."""
        if error is None:
            self.backoff.reset()
            return
        if error.startswith((UNAVAILABLE, DRIVER_GONE)):
            self._drop_channel()  # the next task reconnects (and records a connect row)
        self.backoff_wait()


__all__ = ["GrpcUser"]


@events.init.add_listener
def _start_driver_early(environment: Any, **_kw: Any) -> None:
    """Start the driver process while Locust starts up (about half a second of imports), so
    the first gRPC users do not wait for it. Only where users run, and only for gRPC users."""
    if isinstance(environment.runner, MasterRunner):
        return
    if any(issubclass(c, GrpcUser) for c in environment.user_classes or ()):
        gevent.spawn(_try_start)


def _try_start() -> None:
    try:
        driver()
    except DriverError as exc:  # the users report it on their connect rows
        log.warning("%s", exc)
