"""The asyncio gRPC driver (``echoswarm.streams.grpc_calls``) and the driver process
(``echoswarm.streams.sidecar``) against the real gRPC server, without Locust or gevent."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgpack
import pytest

from echoswarm.measure import Sample
from echoswarm.streams import protocol as p
from echoswarm.streams.core import LOST_ON_STOP, StreamConfig
from echoswarm.streams.grpc_calls import KINDS, CallSpec, Stop, open_channel
from echoswarm.streams.pacer import AsyncPacer
from protos import echo_pb2_grpc
from tests import procs

MS = 1_000_000


def spec(kind: str, *, interval_ms: int = 20, messages: int | None = None,
         pingpong: bool = False, frames: int = 5, timeout_ms: int = 2_000) -> CallSpec:  # fmt: skip
    name = "bidi msg" if kind == "bidi" else kind
    cfg = StreamConfig("grpc", name, interval_ms * MS, pingpong, messages, None, timeout_ms * MS)
    return CallSpec(kind, "", 1, 9, 100, cfg, frames)


async def run_kind(
    target: str, call: CallSpec, stop_when: Callable[[list[Sample]], bool] | None = None
) -> tuple[str | None, list[Sample]]:
    """Open a channel, run one task of ``call``; ``stop_when`` (checked every 5 ms) stops it."""
    samples: list[Sample] = []
    channel, error = await open_channel(
        target, 5.0, samples.append, user_id=1, conn_id=1, name="connect"
    )
    assert channel is not None, error
    pacer = AsyncPacer(asyncio.get_running_loop())
    stop = Stop()
    try:
        task = asyncio.ensure_future(
            KINDS[call.kind](echo_pb2_grpc.EchoStub(channel), call, samples.append, pacer, stop)
        )
        while stop_when is not None and not task.done():
            if stop_when(samples):
                stop.set()
                break
            await asyncio.sleep(0.005)
        result = await asyncio.wait_for(task, 20)
    finally:
        await channel.close(None)
        pacer.close()
    return result, samples


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def rows(samples: list[Sample], name: str) -> list[Sample]:
    return [s for s in samples if s.name == name]


@pytest.mark.timeout(60)
def test_each_kind_against_a_delayed_server(start_server: Callable[..., procs.Proc]) -> None:
    target = start_server("grpc", "--delay-ms", "20").target
    error, samples = run(run_kind(target, spec("bidi", messages=10)))
    assert error is None
    msgs = rows(samples, "bidi msg")
    assert [s.seq for s in msgs] == list(range(10)) and all(s.ok for s in msgs)
    assert all(s.latency_ns >= 20 * MS for s in msgs)  # never below the server's delay
    assert all(s.intended_ns == msgs[0].intended_ns + s.seq * 20 * MS for s in msgs)

    error, samples = run(run_kind(target, spec("unary", interval_ms=10), lambda s: len(s) >= 6))
    unary = rows(samples, "unary")
    assert error is None and len(unary) >= 5 and all(s.latency_ns >= 20 * MS for s in unary)

    error, samples = run(run_kind(target, spec("server_stream", interval_ms=10, frames=5)))
    assert error is None
    assert [s.seq for s in rows(samples, "server_stream msg")] == list(range(5))
    first = rows(samples, "server_stream first")
    assert len(first) == 1 and first[0].latency_ns >= 20 * MS

    error, samples = run(run_kind(target, spec("client_stream", interval_ms=10, frames=5)))
    upload = rows(samples, "client_stream")
    assert error is None and len(upload) == 1 and upload[0].ok and upload[0].nbytes == 5 * 100


@pytest.mark.timeout(60)
def test_stop_drains_replies_in_flight_and_counts_the_rest_as_lost(
    start_server: Callable[..., procs.Proc],
) -> None:
    target = start_server("grpc", "--delay-ms", "3000").target  # replies far later than drain
    call = spec("bidi", interval_ms=10, timeout_ms=1_000)  # stop drain = min(2 s, 1 s)
    started = time.monotonic()  # stop 0.15 s in: ~15 messages in flight (a stimulus schedule)
    error, samples = run(run_kind(target, call, lambda _: time.monotonic() - started > 0.15))
    msgs = rows(samples, "bidi msg")
    assert error is None and len(msgs) >= 5
    assert {s.error for s in msgs} <= {f"lost: {LOST_ON_STOP}", "timeout: no reply within 1 s"}
    assert sorted(s.seq for s in msgs) == list(range(len(msgs)))  # one sample per message


@pytest.mark.timeout(60)
def test_a_stop_during_a_blocked_write_still_collects_the_replies_in_flight(
    start_server: Callable[..., procs.Proc],
) -> None:
    """grpc.aio cancels the whole call when a write is cancelled: a stop that arrives while
    the sender waits for HTTP/2 flow control must let that write finish, or every reply in
    flight is lost with it (seen at the end of runs over an emulated 20 ms WAN)."""
    # The server reads one 1 MB frame at a time and holds it 100 ms: the sender's writes soon
    # wait for flow control, so the stop (0.4 s in) lands in one.
    target = start_server("grpc", "--delay-ms", "100", "--delay-buffer-bytes", "65536").target
    call = spec("bidi", interval_ms=10, timeout_ms=2_000)
    call = CallSpec(call.kind, "", 1, 9, 1_000_000, call.stream, call.frames)
    started = time.monotonic()
    stopped_ns: list[int] = []

    def stop_when(_: list[Sample]) -> bool:
        if time.monotonic() - started > 0.4:
            stopped_ns.append(time.monotonic_ns())
            return True
        return False

    error, samples = run(run_kind(target, call, stop_when))
    msgs = rows(samples, "bidi msg")
    assert error is None and stopped_ns
    after_stop = [s for s in msgs if s.ok and s.received_ns > stopped_ns[0]]
    assert after_stop, [(s.seq, s.error) for s in msgs]  # the drain collected replies in flight
    assert sorted(s.seq for s in msgs) == list(range(len(msgs)))  # one sample per message


@pytest.mark.timeout(60)
def test_a_dead_server_is_a_connect_failure_and_a_killed_one_loses_the_call(
    start_server: Callable[..., procs.Proc],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = f"127.0.0.1:{s.getsockname()[1]}"
    samples: list[Sample] = []
    channel, error = run(
        open_channel(free, 0.3, samples.append, user_id=1, conn_id=1, name="connect")
    )
    assert channel is None and error == "not ready within 0.3 s (server down or unreachable)"
    assert samples[0].name == "connect" and samples[0].error == error

    server = start_server("grpc", "--delay-ms", "50")

    def kill_after_some(got: list[Sample]) -> bool:
        if len(rows(got, "bidi msg")) >= 3 and server.popen.poll() is None:
            server.popen.kill()
        return False

    error, samples = run(run_kind(server.target, spec("bidi", interval_ms=10), kill_after_some))
    assert error == "unavailable (server down or connection lost)"
    lost = [s for s in rows(samples, "bidi msg") if not s.ok]
    assert lost and {s.error for s in lost} == {f"lost: {error}"}


@pytest.mark.timeout(60)
def test_the_driver_process_runs_calls_and_streams_samples_in_batches(
    start_server: Callable[..., procs.Proc],
) -> None:
    target = start_server("grpc").target
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "echoswarm.streams.sidecar", "--fd", str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        env=procs.env(ECHOSWARM_PARENT_PID=str(os.getpid())),
    )
    theirs.close()
    ours.settimeout(20)
    unpacker = msgpack.Unpacker(use_list=True, raw=False)

    def receive_until(op: str) -> list[list[Any]]:
        got = []
        while True:
            for msg in unpacker:
                got.append(msg)
                if msg[0] == op:
                    return got
            data = ours.recv(65536)
            assert data, "the driver process closed the socket"
            unpacker.feed(data)

    try:
        assert receive_until(p.HELLO)[-1][1] == proc.pid
        ours.sendall(msgpack.packb([p.OPEN, 1, target, 5.0, 4, 5, "connect"]))
        opened = receive_until(p.OPENED)
        assert opened[-1] == [p.OPENED, 1, None]
        cfg = StreamConfig("grpc", "bidi msg", 0, True, 300, None, 2_000 * MS)
        wire = {"kind": "bidi", "user_id": 4, "conn_id": 6, "payload_bytes": 64,
                "stream": cfg.as_wire(), "frames": 0}  # fmt: skip
        ours.sendall(msgpack.packb([p.CALL, 2, 1, wire]))
        got = receive_until(p.ENDED)
        assert got[-1] == [p.ENDED, 2, None]
        batches = [m[1] for m in got if m[0] == p.SAMPLES]
        rows_ = [Sample(*r[1:]) for b in batches for r in b if r[0] == 2]
        assert [s.seq for s in rows_] == list(range(300)) and all(s.ok for s in rows_)
        assert len(batches) < 300 // 4  # batched: far fewer writes than samples
        ours.sendall(msgpack.packb([p.CALL, 3, 99, wire]))  # no such channel
        assert receive_until(p.ENDED)[-1] == [p.ENDED, 3, "no such channel (closed)"]
    finally:
        ours.close()  # the Locust side going away ends the driver process
        assert proc.wait(timeout=10) == 0
