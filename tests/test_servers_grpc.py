"""The gRPC echo server as a real process, driven with grpcio stubs: every RPC kind, byte-exact
echo of odd sizes, pacing, health, reflection (also used to call the service without the
generated stubs), --delay-ms, and SIGTERM in the middle of a stream. Every test runs against both
``--impl aio`` and ``--impl sync``."""

from __future__ import annotations

import contextlib
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from echoswarm.wire import pattern
from protos import echo_pb2, echo_pb2_grpc
from tests import procs
from tests.conftest import require_tool

SIZES = [0, 1, 31, 32, 3200, 480_032, 4 * 1024 * 1024]
MiB = 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * MiB),
    ("grpc.max_receive_message_length", 64 * MiB),
]
IMPLS = ["aio", "sync"]
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module", params=IMPLS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    p = procs.server("grpc", "--impl", request.param, tmp_path=tmp_path_factory.mktemp("grpc"))
    yield p
    assert p.stop() == 0
    assert "Traceback" not in p.stderr_text()


@pytest.fixture
def channel(server: procs.Proc) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target, options=CHANNEL_OPTIONS) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> echo_pb2_grpc.EchoStub:
    return echo_pb2_grpc.EchoStub(channel)


@contextlib.contextmanager
def echo_stub(p: procs.Proc) -> Iterator[echo_pb2_grpc.EchoStub]:
    with grpc.insecure_channel(p.target, options=CHANNEL_OPTIONS) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield echo_pb2_grpc.EchoStub(ch)


def frame(seq: int, size: int) -> echo_pb2.Frame:
    return echo_pb2.Frame(
        seq=seq, intended_send_ns=-seq - 1, sent_ns=time.monotonic_ns(), payload=pattern(size)
    )


@pytest.mark.parametrize("size", SIZES)
def test_unary_echoes_byte_exact(stub: echo_pb2_grpc.EchoStub, size: int) -> None:
    sent = frame(7, size)
    got = stub.Unary(sent, timeout=20)
    assert got == sent
    assert len(got.payload) == size


def test_bidi_pipelined_replies_in_order(stub: echo_pb2_grpc.EchoStub) -> None:
    sent = [frame(i, SIZES[i % len(SIZES)] if i % 7 else i) for i in range(60)]
    got = list(stub.Bidi(iter(sent), timeout=30))
    assert [f.seq for f in got] == list(range(60))
    assert got == sent


def test_server_stream_count_and_pacing(stub: echo_pb2_grpc.EchoStub) -> None:
    before = time.monotonic_ns()
    req = echo_pb2.StreamRequest(count=8, payload_bytes=3200, interval_ms=25)
    got = list(stub.ServerStream(req, timeout=10))
    elapsed_ms = (time.monotonic_ns() - before) / 1e6
    assert [f.seq for f in got] == list(range(8))
    assert all(f.payload == pattern(3200) for f in got)
    # A schedule, not cumulative sleeps: due times are exactly interval apart ...
    assert [f.intended_send_ns - got[0].intended_send_ns for f in got] == [
        i * 25_000_000 for i in range(8)
    ]
    # ... and nothing is sent before it is due (server clock; same machine, same clock).
    assert all(f.sent_ns >= f.intended_send_ns for f in got)
    assert all(before <= f.intended_send_ns for f in got)
    assert elapsed_ms >= 7 * 25


def test_server_stream_as_fast_as_possible(stub: echo_pb2_grpc.EchoStub) -> None:
    got = list(stub.ServerStream(echo_pb2.StreamRequest(count=2000, payload_bytes=1), timeout=20))
    assert [f.seq for f in got] == list(range(2000))
    assert {len(f.payload) for f in got} == {1}


def test_server_stream_rejects_payload_over_limit(stub: echo_pb2_grpc.EchoStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.ServerStream(echo_pb2.StreamRequest(count=1, payload_bytes=2**32 - 1)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max-message-bytes" in (info.value.details() or "")


def test_client_stream_summary(stub: echo_pb2_grpc.EchoStub) -> None:
    sent = [frame(10 + i, size) for i, size in enumerate(SIZES)]
    summary = stub.ClientStream(iter(sent), timeout=20)
    assert summary == echo_pb2.StreamSummary(
        frames=len(SIZES), bytes=sum(SIZES), first_seq=10, last_seq=10 + len(SIZES) - 1
    )
    assert stub.ClientStream(iter([]), timeout=5) == echo_pb2.StreamSummary()


def test_health_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "echoswarm.v1.Echo"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _reflect(channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    return reply


def test_reflection_lists_and_calls_the_service_without_generated_code(
    channel: grpc.Channel,
) -> None:
    """A client that knows nothing but the server's address: discover, decode, call."""
    listed = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {"echoswarm.v1.Echo", "grpc.health.v1.Health"} <= names

    files = _reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol="echoswarm.v1.Echo")
    )
    pool = descriptor_pool.DescriptorPool()
    for raw in files.file_descriptor_response.file_descriptor_proto:
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(raw))
    service = pool.FindServiceByName("echoswarm.v1.Echo")
    assert [m.name for m in service.methods] == ["Unary", "ServerStream", "ClientStream", "Bidi"]
    unary = service.methods_by_name["Unary"]
    request_cls = message_factory.GetMessageClass(unary.input_type)
    reply_cls = message_factory.GetMessageClass(unary.output_type)
    call = channel.unary_unary(
        f"/{service.full_name}/{unary.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=reply_cls.FromString,
    )
    reply = call(request_cls(seq=42, intended_send_ns=1, sent_ns=2, payload=b"dyn"), timeout=5)
    assert (reply.seq, reply.intended_send_ns, reply.sent_ns, reply.payload) == (42, 1, 2, b"dyn")


def test_curl_as_an_outside_grpc_client(server: procs.Proc, tmp_path) -> None:
    """curl + nghttp2 speak gRPC's wire format (length-prefixed protobuf over HTTP/2) with no
    gRPC library at all: the reply body must be our request, byte for byte, with status 0."""
    curl = require_tool("curl")
    message = frame(9, 3200).SerializeToString()
    request = tmp_path / "request.bin"
    request.write_bytes(b"\0" + struct.pack(">I", len(message)) + message)
    reply = tmp_path / "reply.bin"
    result = subprocess.run(
        [curl, "-sS", "-v", "--http2-prior-knowledge", "--max-time", "10", "-X", "POST",
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         "--data-binary", f"@{request}", "-o", str(reply),
         f"http://{server.target}/echoswarm.v1.Echo/Unary"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "< grpc-status: 0" in result.stderr
    assert reply.read_bytes() == request.read_bytes()


@pytest.mark.parametrize("impl", IMPLS)
def test_delay_is_honoured_and_does_not_serialise_pipelined_replies(
    start_server, impl: str
) -> None:
    p = start_server("grpc", "--impl", impl, "--delay-ms", "50")
    with echo_stub(p) as stub:
        stub.Unary(frame(0, 1), timeout=5)  # warm the connection
        t0 = time.monotonic_ns()
        stub.Unary(frame(1, 32), timeout=5)
        assert (time.monotonic_ns() - t0) / 1e6 >= 50

        n = 20
        t0 = time.monotonic_ns()
        arrivals = [
            (time.monotonic_ns() - t0) / 1e6
            for _ in stub.Bidi(iter(frame(i, 32) for i in range(n)), timeout=10)
        ]
        assert len(arrivals) == n
        assert min(arrivals) >= 50
        # Serialised delays would take n * 50 ms = 500 ms; concurrent ones about 50 ms.
        assert max(arrivals) < 50 * n / 2, arrivals


@pytest.mark.parametrize("impl", IMPLS)
def test_cancelled_delayed_streams_release_their_workers(start_server, impl: str) -> None:
    """With 4 worker threads, 12 abandoned delayed Bidi streams must not use them up."""
    p = start_server("grpc", "--impl", impl, "--threads", "4", "--delay-ms", "20")
    with echo_stub(p) as stub:
        for k in range(12):
            gate = threading.Event()

            def requests(gate: threading.Event) -> Iterator[echo_pb2.Frame]:
                yield from (frame(i, 100) for i in range(3))
                gate.wait(10)  # hold the stream open until the client cancels it

            call = stub.Bidi(requests(gate), timeout=10)
            assert next(call).seq == 0, k
            call.cancel()
            gate.set()
        assert stub.Unary(frame(99, 10), timeout=5).seq == 99


@pytest.mark.parametrize("impl", IMPLS)
def test_sigterm_mid_stream_ends_cleanly(start_server, impl: str) -> None:
    p = start_server("grpc", "--impl", impl, "--grace-s", "0.3")
    with echo_stub(p) as stub:
        stream = stub.ServerStream(
            echo_pb2.StreamRequest(count=100_000, payload_bytes=100, interval_ms=10), timeout=30
        )
        first = next(stream)
        assert first.seq == 0
        t0 = time.monotonic()
        p.popen.send_signal(signal.SIGTERM)
        seen = 1
        with pytest.raises(grpc.RpcError) as info:
            for _ in stream:
                seen += 1
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert p.popen.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 5
        assert seen < 100_000
    assert "Traceback" not in p.stderr_text()


@pytest.mark.parametrize("impl", IMPLS)
def test_sigterm_lets_a_short_stream_finish_within_the_grace_period(
    start_server, impl: str
) -> None:
    p = start_server("grpc", "--impl", impl, "--grace-s", "10")
    with echo_stub(p) as stub:
        req = echo_pb2.StreamRequest(count=5, payload_bytes=10, interval_ms=60)
        stream = stub.ServerStream(req, timeout=10)
        assert next(stream).seq == 0
        t0 = time.monotonic()
        p.popen.send_signal(signal.SIGTERM)
        assert [f.seq for f in stream] == [1, 2, 3, 4]  # the call completes normally
        assert p.popen.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 3  # and the server did not wait out the 10 s grace


@pytest.mark.parametrize("impl", IMPLS)
def test_message_over_limit_is_refused_and_server_keeps_serving(start_server, impl: str) -> None:
    p = start_server("grpc", "--impl", impl, "--max-message-bytes", "4096")
    with echo_stub(p) as stub:
        with pytest.raises(grpc.RpcError) as info:
            stub.Unary(frame(0, 8192), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.Unary(frame(1, 1000), timeout=5).payload == pattern(1000)


def test_many_concurrent_bidi_streams(server: procs.Proc) -> None:
    """Dozens of open streams at once (the sync impl holds a thread for each)."""
    n, per_stream = 40, 20
    errors: list[BaseException] = []
    with echo_stub(server) as stub:
        barrier = threading.Barrier(n)

        def one(k: int) -> None:
            try:
                barrier.wait(timeout=10)
                sent = [frame(i, 64 + k) for i in range(per_stream)]
                assert list(stub.Bidi(iter(sent), timeout=20)) == sent
            except BaseException as exc:  # collected and re-raised in the test thread
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors[:3]
