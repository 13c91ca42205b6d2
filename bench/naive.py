"""The naive load-generating users the benchmark compares ours against.

Each is what Locust's documentation leads a user to write for a transport Locust does not ship:
a ``User`` whose task does one blocking round trip with a plain client library, times it with
``time.perf_counter`` and fires ``events.request`` itself (the "custom client" recipe), with
Locust's normal task loop (``wait_time = constant(0)``) around it:

* TCP — a plain ``socket``: ``sendall`` a frame built with ``struct.pack`` + payload, then
  ``recv`` chunks and concatenate them until the frame is back;
* WebSocket — ``websocket-client``: ``send_binary`` then ``recv``;
* gRPC bidi — the generated sync stub's ``Bidi`` fed by a ``queue.Queue`` request iterator
  (the usual way to turn a blocking stub into a call you can push into), after
  ``grpc.experimental.gevent.init_gevent()`` as Locust's gRPC example does.

They check each echo (a benchmark that did not would flatter them) and count ping-pong
messages only; connection setup happens in ``on_start`` and is not a row.
"""

from __future__ import annotations

import queue
import socket
import struct
import time
from typing import Any

import locust  # noqa: F401  (gevent monkey-patching before any socket use)
from locust import User, constant, task

from echoswarm.users import options
from echoswarm.wire import HEADER_SIZE, MAGIC, VERSION, pattern

_HEADER = struct.Struct("<2sBBIQqq")


class NaiveUser(User):
    """Shared frame building and event firing; subclasses do one round trip in ``roundtrip``."""

    abstract = True
    transport = ""
    wait_time = constant(0)

    def on_start(self) -> None:
        self.opts = options.of(self.environment)
        self.payload = pattern(self.opts.frame_bytes - HEADER_SIZE)
        self.seq = 0
        self.connect()

    def connect(self) -> None:
        raise NotImplementedError

    def roundtrip(self, frame: bytes) -> Any:
        raise NotImplementedError

    def frame(self) -> bytes:
        now = time.monotonic_ns()
        header = _HEADER.pack(MAGIC, VERSION, 0, len(self.payload), self.seq, now, now)
        return header + self.payload

    @task
    def echo(self) -> None:
        frame = self.frame()
        self.seq += 1
        start = time.perf_counter()
        exc: Exception | None = None
        try:
            reply = self.roundtrip(frame)
            if reply != frame:
                exc = ValueError("echo differs from the frame sent")
        except Exception as e:  # noqa: BLE001 - a failed round trip is a failure row
            exc = e
        self.environment.events.request.fire(
            request_type=self.transport,
            name="msg",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=len(frame),
            exception=exc,
            context={},
        )


class NaiveTcpUser(NaiveUser):
    abstract = True
    transport = "tcp"

    def connect(self) -> None:
        host, _, port = self.opts.tcp_target.rpartition(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def roundtrip(self, frame: bytes) -> bytes:
        self.sock.sendall(frame)
        data = b""
        while len(data) < len(frame):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by peer")
            data += chunk
        return data

    def on_stop(self) -> None:
        self.sock.close()


class NaiveWsUser(NaiveUser):
    abstract = True
    transport = "ws"

    def connect(self) -> None:
        import websocket  # websocket-client

        self.ws = websocket.create_connection(self.opts.ws_url)

    def roundtrip(self, frame: bytes) -> Any:
        self.ws.send_binary(frame)
        return self.ws.recv()

    def on_stop(self) -> None:
        self.ws.close()


class NaiveGrpcUser(NaiveUser):
    abstract = True
    transport = "grpc"

    def connect(self) -> None:
        import grpc
        import grpc.experimental.gevent as grpc_gevent

        from protos import echo_pb2, echo_pb2_grpc

        grpc_gevent.init_gevent()  # idempotent; must precede channel creation
        self.pb = echo_pb2
        self.channel = grpc.insecure_channel(self.opts.grpc_target)
        self.requests: queue.Queue[Any] = queue.Queue()
        self.replies = echo_pb2_grpc.EchoStub(self.channel).Bidi(iter(self.requests.get, None))

    def roundtrip(self, frame: bytes) -> bytes:
        # The same fields our gRPC user sends: seq and stamps as proto fields, payload bytes.
        seq, intended, sent = struct.unpack_from("<Qqq", frame, 8)
        msg = self.pb.Frame(
            seq=seq, intended_send_ns=intended, sent_ns=sent, payload=frame[HEADER_SIZE:]
        )
        self.requests.put(msg)
        reply = next(self.replies)
        if reply.seq != seq or reply.payload != msg.payload:
            raise ValueError("echo differs from the frame sent")
        return frame

    def on_stop(self) -> None:
        self.requests.put(None)
        self.channel.close()


NAIVE_USERS: dict[str, type[NaiveUser]] = {
    "tcp": NaiveTcpUser,
    "ws": NaiveWsUser,
    "grpc": NaiveGrpcUser,
}
