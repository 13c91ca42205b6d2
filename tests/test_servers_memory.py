"""What a hostile client can make a server hold in memory, measured with psutil on loopback.

- gRPC ServerStream: a ~10-byte request asks for frames of up to 64 MiB; sixteen such requests,
  each cancelled as soon as the server answers, must not leave the server holding a copy per size
  (it used to cache them: +1 GB that stayed) nor log an ERROR or a traceback per cancel.
- ``--delay-ms`` queues: a client that pipelines 1 MiB messages into a delayed connection and
  never reads the replies must meet backpressure after a few MiB (the server stops reading that
  connection), not after 1,024 messages. WebSocket, gRPC Bidi, and the TCP models that hold
  delayed bytes themselves (asyncio protocol timers, the epoll reactor, the select_prethread pool).

Each test prints what it measured (``pytest -s``): server RSS at rest, at its peak during the
attack, and once the attacker has gone.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import psutil
import pytest

from echoswarm.wire import pattern
from protos import echo_pb2, echo_pb2_grpc
from tests import procs
from tests.test_servers_robustness import reset, ws_frame_head

pytestmark = pytest.mark.timeout(60)
MiB = 1024 * 1024
IMPLS = ["aio", "sync"]
STALL_S = 0.5  # no progress for this long = the server has stopped reading


class PeakRss:
    """Samples a process's RSS every few ms on a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.base = self.now()
        self.peak = self.base
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        return int(self.proc.memory_info().rss)

    def _run(self) -> None:
        while not self._done.wait(0.005):
            try:
                self.peak = max(self.peak, self.now())
            except psutil.Error:
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(5)
        self.peak = max(self.peak, self.now())

    def settle(self, below: int, deadline_s: float = 10.0) -> int:
        """Poll until RSS is below ``below`` (or the deadline passes); return the last reading.
        Freed memory goes back to the OS as the server finishes its cancelled calls."""
        end = time.monotonic() + deadline_s
        rss = self.now()
        while rss >= below and time.monotonic() < end:
            self._done.wait(0.05)
            rss = self.now()
        return rss

    def report(self, label: str, after: int) -> str:
        line = (
            f"[{label}] server RSS MiB: at rest {self.base / MiB:.0f}, "
            f"peak {self.peak / MiB:.0f} (+{(self.peak - self.base) / MiB:.0f}), "
            f"after {after / MiB:.0f} (+{(after - self.base) / MiB:.0f})"
        )
        print("\n" + line)
        return line


@contextlib.contextmanager
def echo_stub(p: procs.Proc) -> Iterator[echo_pb2_grpc.EchoStub]:
    opts = [("grpc.max_receive_message_length", 128 * MiB), ("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(p.target, options=opts) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield echo_pb2_grpc.EchoStub(ch)


def warm_up(stub: echo_pb2_grpc.EchoStub) -> None:
    """Touch every code path once, so the baseline includes imports and first-call caches."""
    frame = echo_pb2.Frame(seq=1, payload=pattern(3200))
    assert stub.Unary(frame, timeout=10) == frame
    req = echo_pb2.StreamRequest(count=3, payload_bytes=3200)
    assert [f.seq for f in stub.ServerStream(req, timeout=10)] == [0, 1, 2]
    assert [f.seq for f in stub.Bidi(iter([frame, frame]), timeout=10)] == [1, 1]


def no_errors_logged(p: procs.Proc) -> None:
    text = p.stderr_text()
    assert "Traceback" not in text, text[-3000:]
    assert " ERROR " not in text, text[-3000:]


# -- gRPC ServerStream amplification -----------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_server_stream_cancel_burst_is_bounded_and_quiet(start_server, impl: str) -> None:
    """Sixteen concurrent ~10-byte requests for endless streams of ~64 MiB frames (a different
    size each), each cancelled as soon as the server has answered it."""
    p = start_server("grpc", "--impl", impl)
    with echo_stub(p) as stub:
        warm_up(stub)
        with PeakRss(p.pid) as rss:
            requests = [
                echo_pb2.StreamRequest(count=2**32 - 1, payload_bytes=64 * MiB - 64 - i)
                for i in range(16)
            ]
            assert max(r.ByteSize() for r in requests) <= 12
            calls = [stub.ServerStream(r, timeout=30) for r in requests]
            for call in calls:
                call.initial_metadata()  # the server has started this stream (or refused it)
            for call in calls:
                call.cancel()
        refused = sum(c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for c in calls)
        after = rss.settle(below=rss.base + 16 * MiB)
        rss.report(f"grpc {impl} ServerStream x16 cancelled, {refused} refused", after)
        # Still serves a real stream afterwards.
        req = echo_pb2.StreamRequest(count=4, payload_bytes=1 * MiB)
        assert [len(f.payload) for f in stub.ServerStream(req, timeout=20)] == [MiB] * 4
    no_errors_logged(p)
    # The default budget (--stream-memory-bytes 256 MiB) admits one such call at a time.
    assert refused == 15
    assert rss.peak - rss.base < 400 * MiB
    assert after - rss.base < 16 * MiB  # nothing kept once the calls are gone


@pytest.mark.parametrize("impl", IMPLS)
def test_server_stream_budget_refuses_what_does_not_fit(start_server, impl: str) -> None:
    """A call that alone exceeds the budget is refused with a status naming the flag; calls that
    fit run side by side until the budget is used, and the budget is returned when they end."""
    p = start_server("grpc", "--impl", impl, "--stream-memory-bytes", str(8 * MiB))
    with echo_stub(p) as stub:
        with pytest.raises(grpc.RpcError) as info:
            next(stub.ServerStream(echo_pb2.StreamRequest(count=1, payload_bytes=4 * MiB)))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--stream-memory-bytes" in (info.value.details() or "")
        # 1 MiB frames are charged 3 MiB each: two endless streams fit, a third does not.
        endless = echo_pb2.StreamRequest(count=2**32 - 1, payload_bytes=MiB, interval_ms=50)
        first, second = stub.ServerStream(endless), stub.ServerStream(endless)
        assert next(first).seq == 0 and next(second).seq == 0
        with pytest.raises(grpc.RpcError) as info:
            next(stub.ServerStream(endless, timeout=10))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        first.cancel()
        second.cancel()
        # Cancelled calls give their share back (the handler notices within one interval).
        deadline = time.monotonic() + 10
        while True:
            try:
                got = list(stub.ServerStream(echo_pb2.StreamRequest(count=2, payload_bytes=MiB)))
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline, "budget never returned"
        assert [f.payload for f in got] == [pattern(MiB)] * 2
    no_errors_logged(p)


# -- --delay-ms queues bounded by bytes --------------------------------------------------------


def pump(send: Callable[[], bool], deadline_s: float) -> None:
    """Call ``send`` (True = made progress, False = would block) until it has nothing left to
    send (raises StopIteration) or makes no progress for ``STALL_S``."""
    end = time.monotonic() + deadline_s
    last_progress = time.monotonic()
    while time.monotonic() < end:
        try:
            progressed = send()
        except StopIteration:
            return
        now = time.monotonic()
        if progressed:
            last_progress = now
        elif now - last_progress > STALL_S:
            return


def flood_socket(sock: socket.socket, data: bytes, deadline_s: float, repeat: int = 1) -> int:
    """Send ``data`` ``repeat`` times without reading anything back; return how many bytes the
    kernel took."""
    sock.setblocking(False)
    view = memoryview(data)
    sent = 0

    def send() -> bool:
        nonlocal sent
        if sent == len(data) * repeat:
            raise StopIteration
        at = sent % len(data)
        try:
            sent += sock.send(view[at : at + 4 * MiB])
            return True
        except BlockingIOError:
            select.select([], [sock], [], 0.05)
            return False

    pump(send, deadline_s)
    return sent


def test_ws_delayed_pipelining_is_bounded_by_bytes(start_server) -> None:
    """300 pipelined 1 MiB messages into a --delay-ms connection, replies never read."""
    p = start_server("ws", "--delay-ms", "200")
    message = pattern(MiB)
    frame = ws_frame_head(len(message)) + message  # mask key 0: the payload goes as is
    s = socket.create_connection((p.host, p.port), timeout=10)
    try:
        s.sendall(procs.ws_upgrade_request(p.host, p.port))
        assert procs.read_http_head(s).startswith(b"HTTP/1.1 101")
        with PeakRss(p.pid) as rss:
            sent = flood_socket(s, frame, deadline_s=5, repeat=300)
        rss.report(f"ws --delay-ms 200, {sent / MiB:.0f} MiB accepted of 300", rss.now())
        assert sent < 100 * len(frame), f"the server read {sent / MiB:.0f} MiB without replying"
        # The connection still works: the first reply is the first message.
        s.setblocking(True)
        s.settimeout(10)
        head = recv_exactly(s, 10)
        assert head[:2] == b"\x82\x7f" and int.from_bytes(head[2:10], "big") == MiB
        assert recv_exactly(s, MiB) == message
    finally:
        reset(s)
    after = rss.settle(below=rss.base + 32 * MiB)
    rss.report("ws, attacker gone", after)
    assert rss.peak - rss.base < 64 * MiB
    assert after - rss.base < 32 * MiB
    no_errors_logged(p)


def test_ws_unread_large_messages_are_bounded_by_bytes(start_server) -> None:
    """No delay, default --max-size (16 MiB): 20 pipelined 16 MiB messages, replies never read.
    The handler blocks on its first reply; what websockets buffers behind it must stay a few
    messages, not its default 16 frames (256 MiB)."""
    p = start_server("ws")
    message = pattern(16 * MiB - 64)
    frame = ws_frame_head(len(message)) + message
    s = socket.create_connection((p.host, p.port), timeout=10)
    try:
        s.sendall(procs.ws_upgrade_request(p.host, p.port))
        assert procs.read_http_head(s).startswith(b"HTTP/1.1 101")
        with PeakRss(p.pid) as rss:
            sent = flood_socket(s, frame, deadline_s=5, repeat=20)
        rss.report(f"ws 16 MiB messages unread, {sent / MiB:.0f} MiB accepted of 320", rss.now())
        assert sent < 8 * len(frame), f"the server read {sent / MiB:.0f} MiB without replying"
    finally:
        reset(s)
    # The closed connection's buffered frames (two here) are freed by Python's cyclic GC, which
    # an idle server runs only once it allocates again: allow them, not more.
    after = rss.settle(below=rss.base + 40 * MiB)
    rss.report("ws, attacker gone", after)
    assert rss.peak - rss.base < 100 * MiB
    assert after - rss.base < 40 * MiB
    no_errors_logged(p)


@pytest.mark.parametrize("impl", IMPLS)
def test_grpc_delayed_bidi_pipelining_is_bounded_by_bytes(start_server, impl: str) -> None:
    p = start_server("grpc", "--impl", impl, "--delay-ms", "200")
    pulled = 0
    progress = threading.Event()

    def requests() -> Iterator[echo_pb2.Frame]:
        nonlocal pulled
        for seq in range(300):
            pulled += 1
            progress.set()
            yield echo_pb2.Frame(seq=seq, payload=pattern(MiB))

    def send() -> bool:
        if pulled >= 300:
            raise StopIteration
        moved = progress.wait(0.05)
        progress.clear()
        return moved

    with echo_stub(p) as stub:
        warm_up(stub)
        with PeakRss(p.pid) as rss:
            call = stub.Bidi(requests(), timeout=30)
            pump(send, deadline_s=5)
            rss.report(f"grpc {impl} Bidi --delay-ms 200, {pulled} of 300 frames", rss.now())
            assert pulled < 100, f"the server took {pulled} MiB without replying"
            first = next(call)  # the stream still works
            assert first.seq == 0 and first.payload == pattern(MiB)
            call.cancel()
    after = rss.settle(below=rss.base + 32 * MiB)
    rss.report(f"grpc {impl} Bidi, attacker gone", after)
    assert rss.peak - rss.base < 96 * MiB
    assert after - rss.base < 32 * MiB
    no_errors_logged(p)


@pytest.mark.parametrize("model", ["asyncio", "epoll", "select_prethread", "thread"])
def test_tcp_delayed_flood_is_bounded_by_bytes(start_server, model: str) -> None:
    p = start_server("tcp", "--model", model, "--delay-ms", "200")
    data = pattern(64 * MiB)
    with socket.create_connection((p.host, p.port), timeout=10) as s:
        with PeakRss(p.pid) as rss:
            sent = flood_socket(s, data, deadline_s=1.5)
        assert sent < 32 * MiB, f"{model} took {sent / MiB:.0f} MiB without replying"
        s.setblocking(True)
        s.settimeout(10)
        assert recv_exactly(s, 64 * 1024) == data[: 64 * 1024]
        reset(s)
    after = rss.settle(below=rss.base + 8 * MiB)
    rss.report(f"tcp {model} --delay-ms 200, {sent / MiB:.1f} MiB accepted", after)
    assert rss.peak - rss.base < 16 * MiB
    no_errors_logged(p)


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(MiB, n - len(buf)))
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)
