"""Hostile and careless clients against the gRPC (aio and sync) and WebSocket servers: garbage
bytes, half-open connections, clients that connect and never send, 1,000 concurrent idle
connections (twice, to catch per-connection leaks), and resets in the middle of a message.

After each, the server must still be up, answer a fresh client promptly, keep its memory in
bounds and print no traceback. The 1,000-connection test prints what it measured (run with
``-s`` to see it): connections held, server RSS before/during/after, probe round-trip times.
"""

from __future__ import annotations

import os
import resource
import selectors
import socket
import statistics
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import grpc
import psutil
import pytest
import websocket

from echoswarm.orchestrate.commands import TCP_MODELS as MODELS
from echoswarm.wire import pattern
from protos import echo_pb2, echo_pb2_grpc
from tests import procs

pytestmark = pytest.mark.timeout(90)
TARGETS = ["grpc-aio", "grpc-sync", "ws"]
IDLE = 1000
ROUNDS = 4
# HTTP/2 client preface followed by an empty SETTINGS frame: an idle, valid HTTP/2 connection.
H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
GARBAGE = [
    os.urandom(4096),
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS ClientHello start
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(512),  # valid preface, then nonsense
    b"\x00" * 70_000,
    b"A" * 20_000 + b"\r\n",  # one endless request line
]


@pytest.fixture(scope="module", autouse=True)
def enough_file_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 3 * IDLE
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else hard, hard)
        )


@dataclass
class Target:
    """A running server plus how to greet it and how to check it still serves."""

    kind: str
    proc: procs.Proc
    hello: bytes  # what an idle-but-valid client sends first
    hello_reply: bytes  # a prefix of what the server answers to it
    probe: Callable[[int], list[float]]  # n round trips on a fresh client -> times in ms

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def assert_healthy(self) -> list[float]:
        assert self.proc.popen.poll() is None, f"server died:\n{self.proc.stderr_text()}"
        times = self.probe(5)
        assert max(times) < 2000, times
        assert "Traceback" not in self.proc.stderr_text()
        return times


def grpc_probe(target: str) -> Callable[[int], list[float]]:
    def probe(n: int) -> list[float]:
        with grpc.insecure_channel(target) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            times = []
            for seq in range(n):
                frame = echo_pb2.Frame(seq=seq, payload=pattern(3200))
                t0 = time.perf_counter_ns()
                assert stub.Unary(frame, timeout=10) == frame
                times.append((time.perf_counter_ns() - t0) / 1e6)
            return times

    return probe


def ws_probe(url: str) -> Callable[[int], list[float]]:
    def probe(n: int) -> list[float]:
        ws = websocket.create_connection(url, timeout=10)
        try:
            times = []
            for seq in range(n):
                body = pattern(3200 + seq)
                t0 = time.perf_counter_ns()
                ws.send_binary(body)
                assert ws.recv() == body
                times.append((time.perf_counter_ns() - t0) / 1e6)
            return times
        finally:
            ws.close()

    return probe


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest, start_server) -> Target:
    if request.param == "ws":
        p = start_server("ws", "--open-timeout-s", "1")
        hello = procs.ws_upgrade_request(p.host, p.port)
        return Target("ws", p, hello, b"HTTP/1.1 101", ws_probe(f"ws://{p.target}/echo"))
    impl = request.param.split("-")[1]
    p = start_server("grpc", "--impl", impl, "--handshake-timeout-s", "1")
    return Target(request.param, p, H2_HELLO, b"\x00\x00", grpc_probe(p.target))


def connect_many(t: Target, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection((t.proc.host, t.proc.port), timeout=10)
        s.setblocking(False)
        socks.append(s)
    return socks


def greet_all(t: Target, socks: list[socket.socket], deadline_s: float = 30) -> None:
    """Send the hello on every socket, then wait until each has the server's answer."""
    for s in socks:
        s.sendall(t.hello)
    pending = {s: b"" for s in socks}
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    end = time.monotonic() + deadline_s
    try:
        while pending and time.monotonic() < end:
            for key, _ in sel.select(timeout=max(0.0, end - time.monotonic())):
                s = cast(socket.socket, key.fileobj)
                data = s.recv(65536)
                assert data, "server closed an idle connection during its handshake"
                if s in pending:
                    pending[s] += data
                    if len(pending[s]) >= len(t.hello_reply):
                        assert pending[s].startswith(t.hello_reply), pending[s][:40]
                        del pending[s]
                        sel.unregister(s)
    finally:
        sel.close()
    assert not pending, f"{len(pending)} of {len(socks)} connections got no handshake answer"


def closed_by_server(s: socket.socket, deadline_s: float) -> bool:
    """Read (and drop) until EOF or reset; False if the connection is still open at the deadline."""
    s.setblocking(True)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            if not s.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def reset(s: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets an RST instead of a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@pytest.fixture
def closing() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def test_garbage_is_dropped_and_server_keeps_serving(target: Target, closing) -> None:
    for junk in GARBAGE:
        s = socket.create_connection((target.proc.host, target.proc.port), timeout=10)
        closing.append(s)
        try:
            s.sendall(junk)
        except (ConnectionResetError, BrokenPipeError):
            continue  # refused mid-send: also fine
        assert closed_by_server(s, 15), f"{target.kind} kept a connection that sent {junk[:20]!r}"
    target.assert_healthy()


def test_garbage_and_resets_log_no_traceback_even_at_debug(start_server, closing) -> None:
    p = start_server("ws", "--log-level", "debug", "--open-timeout-s", "1")
    for junk in GARBAGE:
        s = socket.create_connection((p.host, p.port), timeout=10)
        closing.append(s)
        s.sendall(junk)
        closed_by_server(s, 15)
    s = socket.create_connection((p.host, p.port), timeout=10)
    s.sendall(procs.ws_upgrade_request(p.host, p.port))
    assert procs.read_http_head(s).startswith(b"HTTP/1.1 101")
    s.sendall(ws_frame_head(100_000) + b"x" * 1000)
    reset(s)
    ws_probe(f"ws://{p.target}/echo")(3)
    text = p.stderr_text()
    assert "Traceback" not in text
    assert "DEBUG" in text  # the notes are there, one line each


def test_half_open_connections_are_closed_and_do_not_block_others(target: Target, closing) -> None:
    """The client sends part of its handshake (or all of it), then shuts down its sending side."""
    for cut in (len(target.hello) // 2, len(target.hello)):
        s = socket.create_connection((target.proc.host, target.proc.port), timeout=10)
        closing.append(s)
        s.sendall(target.hello[:cut])
        s.shutdown(socket.SHUT_WR)
        target.assert_healthy()
        assert closed_by_server(s, 15), f"{target.kind} kept a half-closed connection (cut {cut})"


def test_clients_that_never_send_do_not_block_others(target: Target, closing) -> None:
    silent = connect_many(target, 200)
    closing.extend(silent)
    times = target.assert_healthy()
    assert statistics.median(times) < 200
    # Started with a 1 s handshake timeout: silent clients are let go, they do not pile up.
    assert all(closed_by_server(s, 5) for s in silent[:20])


def test_thousand_idle_connections_in_rounds(target: Target, closing) -> None:
    """1,000 handshaken idle connections plus 100 silent ones, opened, probed, closed; four
    rounds. Memory may grow with connections open, but not with connections served: from the
    second round on RSS must level off (a leak would add the same amount every round).
    """
    target.assert_healthy()
    rss_before = target.rss()
    held, rss, medians, maxima = [], [], [], []
    for _ in range(ROUNDS):
        socks = connect_many(target, IDLE)
        silent = connect_many(target, 100)
        greet_all(target, socks)
        server = psutil.Process(target.proc.pid)
        held.append(sum(1 for c in server.net_connections("tcp") if c.status == "ESTABLISHED"))
        rss.append(target.rss())
        times = target.probe(20)
        medians.append(statistics.median(times))
        maxima.append(max(times))
        for s in socks + silent:
            s.close()
        target.assert_healthy()
    rss_after = target.rss()

    def mib(values: list[int]) -> str:
        return "/".join(f"{v / 2**20:.1f}" for v in values)

    def ms(values: list[float]) -> str:
        return "/".join(f"{v:.2f}" for v in values)

    print(
        f"\n[{target.kind}] held {'/'.join(map(str, held))} connections per round; RSS MiB "
        f"before {mib([rss_before])}, during {mib(rss)}, after {mib([rss_after])}; probe "
        f"(20 echoes of 3200 B on a new client while held) median {ms(medians)} ms, "
        f"max {ms(maxima)} ms"
    )
    assert min(held) >= IDLE  # the server really held them all at once
    assert max(medians) < 50 and max(maxima) < 1000
    assert max(rss) - rss_before < 200 * 2**20
    assert rss[-1] - rss[1] < 20 * 2**20, mib(rss)  # levelled off: no per-connection leak
    assert rss_after - rss_before < 200 * 2**20


def ws_frame_head(length: int, opcode: int = 0x2) -> bytes:
    """A masked client frame header declaring ``length`` payload bytes (mask key zero)."""
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return head + b"\0\0\0\0"


def grpc_headers(path: str) -> bytes:
    """HTTP/2 HEADERS for a gRPC call on stream 1 (HPACK literals, no Huffman)."""

    def literal(name: bytes, value: bytes) -> bytes:
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

    block = (
        b"\x83\x86"  # :method POST, :scheme http (static table)
        + b"\x04"
        + bytes([len(path)])
        + path.encode()  # :path, indexed name
        + b"\x01\x09localhost"  # :authority
        + literal(b"content-type", b"application/grpc")
        + literal(b"te", b"trailers")
    )
    return struct.pack("!I", len(block))[1:] + b"\x01\x04" + struct.pack("!I", 1) + block


def grpc_call_head(path: str, message_len: int) -> bytes:
    """A gRPC call's HEADERS and the start of a DATA frame whose 5-byte gRPC prefix announces
    ``message_len`` bytes."""
    chunk = 60_000  # within the initial 65,535-byte flow-control window
    data = struct.pack("!I", chunk)[1:] + b"\x00\x00" + struct.pack("!I", 1)
    return grpc_headers(path) + data + b"\x00" + struct.pack("!I", message_len) + b"z" * (chunk - 5)


def grpc_request(path: str, message: bytes, end_stream: bool = True) -> bytes:
    """A whole gRPC request on stream 1: HEADERS, then one DATA frame holding ``message``."""
    body = b"\x00" + struct.pack("!I", len(message)) + message
    flags = b"\x01" if end_stream else b"\x00"
    return (
        grpc_headers(path)
        + struct.pack("!I", len(body))[1:]
        + b"\x00"
        + flags
        + struct.pack("!I", 1)
        + body
    )


def test_resets_in_the_middle_of_a_message(target: Target, closing) -> None:
    for i in range(20):
        s = socket.create_connection((target.proc.host, target.proc.port), timeout=10)
        if target.kind == "ws":
            s.sendall(target.hello)
            assert procs.read_http_head(s).startswith(b"HTTP/1.1 101")
            s.sendall(ws_frame_head(1_000_000) + b"y" * (1000 * (i + 1)))
        else:
            s.sendall(H2_HELLO + grpc_call_head("/echoswarm.v1.Echo/Bidi", 1_000_000))
        reset(s)
    target.assert_healthy()


def test_ws_frame_claiming_a_huge_length_gets_1009(start_server) -> None:
    """The declared length alone is enough to refuse: nothing is allocated for it."""
    p = start_server("ws", "--max-size", "1000000")
    with socket.create_connection((p.host, p.port), timeout=10) as s:
        s.sendall(procs.ws_upgrade_request(p.host, p.port))
        assert procs.read_http_head(s).startswith(b"HTTP/1.1 101")
        s.sendall(ws_frame_head(2**62))
        s.settimeout(10)
        reply = s.recv(2)
        reply += s.recv(int(reply[1]) & 0x7F)
    assert reply[0] == 0x88  # a close frame
    assert struct.unpack("!H", reply[2:4])[0] == 1009
    ws_probe(f"ws://{p.target}/echo")(3)
    assert psutil.Process(p.pid).memory_info().rss < 500 * 1024 * 1024


def recv_some(s: socket.socket, n: int, deadline_s: float = 10) -> bytes:
    """Read until ``n`` bytes have come (or EOF, or the deadline)."""
    s.settimeout(deadline_s)
    got = b""
    end = time.monotonic() + deadline_s
    while len(got) < n and time.monotonic() < end:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def assert_quiet_log(p: procs.Proc) -> None:
    text = p.stderr_text()
    assert "Traceback" not in text, text[-3000:]
    assert " ERROR " not in text and " WARNING " not in text, text[-3000:]


@pytest.mark.parametrize("impl", ["aio", "sync"])
def test_grpc_whole_requests_then_resets_log_nothing(start_server, impl: str) -> None:
    """Complete calls of every kind, each reset by the client while the server is answering it
    (mid-stream, or before a delayed reply): routine, so no ERROR and no traceback, even at
    --log-level debug, and the server keeps serving."""
    p = start_server("grpc", "--impl", impl, "--delay-ms", "20", "--log-level", "debug")
    frame = echo_pb2.Frame(seq=1, payload=pattern(3200)).SerializeToString()
    endless = echo_pb2.StreamRequest(count=2**32 - 1, payload_bytes=256 * 1024)
    calls = [
        ("/echoswarm.v1.Echo/ServerStream", endless.SerializeToString(), True, 60_000),
        ("/echoswarm.v1.Echo/ServerStream", endless.SerializeToString(), True, 0),
        ("/echoswarm.v1.Echo/Unary", frame, True, 0),
        ("/echoswarm.v1.Echo/Bidi", frame * 1, False, 0),  # stream left open, then reset
        ("/echoswarm.v1.Echo/ClientStream", frame, False, 0),
    ]
    for _ in range(4):
        for path, message, end_stream, wait_for in calls:
            s = socket.create_connection((p.host, p.port), timeout=10)
            s.sendall(H2_HELLO + grpc_request(path, message, end_stream))
            if wait_for:  # the server is streaming 256 KiB frames at us
                assert len(recv_some(s, wait_for)) >= wait_for
            reset(s)
    grpc_probe(p.target)(5)
    assert_quiet_log(p)


def test_ws_huge_and_invalid_length_headers_log_no_traceback(start_server, closing) -> None:
    """Frame headers claiming 2**62, 2**63 (reserved top bit) and 2**64 - 1 bytes, answered or
    cut off by a reset, and a text frame claiming 1 GiB: each closes that connection only."""
    p = start_server("ws", "--log-level", "debug")
    for length in (2**62, 2**63, 2**64 - 1, 17 * 1024 * 1024):
        for cut in (False, True):
            s = socket.create_connection((p.host, p.port), timeout=10)
            closing.append(s)
            s.sendall(procs.ws_upgrade_request(p.host, p.port))
            assert procs.read_http_head(s).startswith(b"HTTP/1.1 101")
            s.sendall(struct.pack("!BBQ", 0x82, 0x80 | 127, length) + b"\0\0\0\0" + b"x" * 100)
            if cut:
                reset(s)
            else:
                assert closed_by_server(s, 10), length
    s = socket.create_connection((p.host, p.port), timeout=10)
    closing.append(s)
    s.sendall(procs.ws_upgrade_request(p.host, p.port))
    assert procs.read_http_head(s).startswith(b"HTTP/1.1 101")
    s.sendall(ws_frame_head(2**30, opcode=0x1) + b"y" * 1000)
    assert closed_by_server(s, 10)
    ws_probe(f"ws://{p.target}/echo")(3)
    assert psutil.Process(p.pid).memory_info().rss < 200 * 1024 * 1024
    assert_quiet_log(p)


TCP_MODELS = list(MODELS)


@pytest.mark.parametrize("model", TCP_MODELS)
def test_tcp_delayed_half_close_and_reset(start_server, closing, model: str) -> None:
    """With --delay-ms: a client that half-closes while its echoes are still held back gets every
    byte and then EOF; one that resets with echoes pending costs nothing; garbage is just bytes.
    No traceback, no warning, even at --log-level debug."""
    p = start_server("tcp", "--model", model, "--delay-ms", "30", "--workers", "2",
                     "--log-level", "debug")  # fmt: skip
    data = os.urandom(300_000)
    s = socket.create_connection((p.host, p.port), timeout=10)
    closing.append(s)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    assert got == data
    for _ in range(3):
        r = socket.create_connection((p.host, p.port), timeout=10)
        r.sendall(os.urandom(100_000))
        reset(r)
    with socket.create_connection((p.host, p.port), timeout=10) as ok:
        ok.sendall(b"still here")
        assert recv_some(ok, 10) == b"still here"
    assert_quiet_log(p)
