"""The TCP echo server, every ``--model``, as a real process on loopback: byte-exact echo of odd
sizes sent in odd chunks, many concurrent clients, resets mid-message, half-closed and idle
clients, bounded buffering, ``--delay-ms``, SIGTERM/SIGINT with connections open (no child
process left), the LISTENING line and usage errors. The same tests run against every model."""

from __future__ import annotations

import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import psutil
import pytest

from servers.tcp import CONNECTION_LIMITED
from servers.tcp import MODELS as TCP_MODELS
from tests import procs
from tests.conftest import require_tool

MODELS = list(TCP_MODELS)
SIZES = [0, 1, 31, 32, 3200, 480_032, 4 * 1024 * 1024]
ODD_CHUNK = 7919  # a prime, so sends never line up with the server's 64 KiB reads
TIMEOUT = 20.0
pytestmark = pytest.mark.timeout(60)


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def send_in_chunks(sock: socket.socket, data: bytes, chunk: int = ODD_CHUNK) -> None:
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        sock.sendall(view[start : start + chunk])


def echo(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` in odd chunks from a thread while reading the echo here (a server that
    echoes as it reads would deadlock a client that sent everything before reading)."""
    sender = threading.Thread(target=send_in_chunks, args=(sock, data))
    sender.start()
    try:
        return recv_exactly(sock, len(data))
    finally:
        sender.join(TIMEOUT)


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def readable_within(sock: socket.socket, seconds: float) -> bool:
    return bool(select.select([sock], [], [], seconds)[0])


def assert_still_serving(port: int) -> None:
    with connect(port) as sock:
        assert echo(sock, b"still here") == b"still here"


@pytest.fixture(scope="module", params=MODELS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[procs.Proc]:
    """One server per model shared by the plain echo tests (its stderr is checked at the end)."""
    p = procs.server("tcp", "--model", request.param, tmp_path=tmp_path_factory.mktemp("tcp"))
    yield p
    assert p.stop() == 0
    assert "Traceback" not in p.stderr_text()


class StartTcp(Protocol):
    def __call__(self, model: str, *args: str, prefix: Sequence[str] = ()) -> procs.Proc: ...


@pytest.fixture
def tcp(tmp_path: Path) -> Iterator[StartTcp]:
    """Start a server for one test: ``tcp("fork", "--workers", "2")``. At teardown a server the
    test left running must stop with exit 0, and no server may have logged a traceback."""
    started: list[procs.Proc] = []

    def start(model: str, *args: str, prefix: Sequence[str] = ()) -> procs.Proc:
        argv = [*prefix, procs.PYTHON, "-m", "servers", "tcp", "--port", "0", "--model", model]
        p = procs.start([*argv, *args], tmp_path=tmp_path / f"tcp-{len(started)}")
        started.append(p)
        return p

    yield start
    for p in started:
        still_running = p.popen.poll() is None
        rc = p.stop()
        assert rc == 0 or not still_running, f"{p.argv} exited {rc} on SIGTERM"
        assert "Traceback" not in p.stderr_text()


def model_of(p: procs.Proc) -> str:
    return p.argv[p.argv.index("--model") + 1]


@pytest.fixture(autouse=True)
def fork_children_finished(request: pytest.FixtureRequest) -> Iterator[None]:
    """With the shared fork-model server, wait (bounded) until the children that served this
    test's connections have exited, so the next test starts clean and the leftover-process
    check never races with a child in the middle of exiting."""
    yield
    if "server" not in request.fixturenames:
        return
    server: procs.Proc = request.getfixturevalue("server")
    if model_of(server) != "fork" or server.popen.poll() is not None:
        return
    parent = psutil.Process(server.pid)
    deadline = time.monotonic() + 10
    while (children := parent.children()) and time.monotonic() < deadline:
        psutil.wait_procs(children, timeout=0.2)


# -- the contract -----------------------------------------------------------------------------


def test_listening_line(server: procs.Proc) -> None:
    assert re.fullmatch(r"LISTENING tcp 127\.0\.0\.1:\d+", server.first_line)
    assert server.port > 0


@pytest.mark.parametrize("size", SIZES)
def test_echo_is_byte_exact(server: procs.Proc, size: int) -> None:
    data = payload(size)
    with connect(server.port) as sock:
        assert echo(sock, data) == data
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # the server closes once it has echoed everything


def test_several_round_trips_on_one_connection(server: procs.Proc) -> None:
    with connect(server.port) as sock:
        for i in range(20):
            message = f"message {i}".encode() * (i + 1)
            sock.sendall(message)
            assert recv_exactly(sock, len(message)) == message


def test_many_concurrent_clients(server: procs.Proc) -> None:
    def client(i: int) -> int:
        with connect(server.port) as sock:
            for trip in range(5):
                data = payload(100 + i * 7 + trip)
                sock.sendall(data)
                assert recv_exactly(sock, len(data)) == data
        return i

    with ThreadPoolExecutor(max_workers=50) as pool:
        assert sorted(pool.map(client, range(50))) == list(range(50))


def test_reset_mid_message_does_not_hurt(server: procs.Proc) -> None:
    # Reset while the server still has bytes to send back, and reset before reading anything.
    with connect(server.port) as big:
        big.sendall(payload(1_000_000))
        recv_exactly(big, 1000)
        reset(big)
    quiet = connect(server.port)
    quiet.sendall(b"half a mess")
    reset(quiet)
    assert_still_serving(server.port)
    assert "Traceback" not in server.stderr_text()


def test_half_closed_client_gets_every_byte_then_eof(server: procs.Proc) -> None:
    data = payload(200_003)
    with connect(server.port) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # half-open: we still read
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
    assert bytes(got) == data


def test_idle_client_does_not_block_others(server: procs.Proc) -> None:
    if model_of(server) == "simple":
        pytest.skip("simple is serial by design: see test_simple_serves_clients_in_turn")
    with connect(server.port):
        assert_still_serving(server.port)


def test_client_that_never_reads_is_bounded(server: procs.Proc) -> None:
    """Flood without reading: the server must stop reading (backpressure), not buffer it all."""
    chunk = payload(65536)
    sent = 0
    with connect(server.port) as sock:
        sock.setblocking(False)
        # Stop once no more bytes are accepted for 0.5 s: the server has stopped reading.
        while sent < 256 * 1024 * 1024:
            try:
                sent += sock.send(chunk[sent % len(chunk) :])  # the stream repeats chunk
            except BlockingIOError:
                if not select.select([], [sock], [], 0.5)[1]:
                    break
        assert sent < 64 * 1024 * 1024, f"server accepted {sent} bytes without them being read"
        sock.settimeout(TIMEOUT)
        got = recv_exactly(sock, sent)
    whole, rest = divmod(sent, len(chunk))
    assert got == chunk * whole + chunk[:rest]
    assert_still_serving(server.port)


def test_simple_serves_clients_in_turn(tcp: StartTcp) -> None:
    p = tcp("simple")
    first, second = connect(p.port), connect(p.port)
    second.sendall(b"second")
    assert echo(first, b"first") == b"first"
    assert not readable_within(second, 0.3), "simple served two clients at once"
    first.close()
    assert recv_exactly(second, 6) == b"second"
    second.close()


# -- flags ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_delay_ms_is_honoured_without_blocking_others(model: str, tcp: StartTcp) -> None:
    p = tcp(model, "--delay-ms", "200")
    clients = 1 if model == "simple" else 16

    def one_trip(_: int) -> float:
        with connect(p.port) as sock:
            began = time.perf_counter()
            sock.sendall(b"x" * 100)
            recv_exactly(sock, 100)
            return time.perf_counter() - began

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        trips = list(pool.map(one_trip, range(clients)))
    wall = time.perf_counter() - began
    assert min(trips) >= 0.19, trips
    # Delays overlap: 16 clients take one delay (two for an 8-wide pool), never sixteen —
    # an event loop that slept instead of setting a timer would take 3.2 s.
    assert wall < 1.6, f"{clients} delayed round trips took {wall:.2f}s"


def structure(model: str, proc: psutil.Process, children: list[psutil.Process]) -> None:
    """The model really is what its name says, seen from outside with 4 clients connected."""
    if model == "fork":
        assert len(children) >= 4, "fork should run a process per connection"
    elif model == "prefork":
        assert len(children) == 4, "prefork --workers 4 should run exactly 4 workers"
    else:
        assert not children, f"{model} should not start processes"
    if model in ("thread", "prethread"):
        assert proc.num_threads() >= 4


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("model", MODELS)
def test_signal_with_active_connections_exits_cleanly(
    model: str, signum: int, tcp: StartTcp
) -> None:
    p = tcp(model, "--workers", "4")
    socks = [connect(p.port) for _ in range(1 if model == "simple" else 4)]
    try:
        for sock in socks:  # every connection is being served (not just queued) before we signal
            assert echo(sock, b"ping") == b"ping"
        proc = psutil.Process(p.pid)
        children = proc.children(recursive=True)
        structure(model, proc, children)
        p.popen.send_signal(signum)
        assert p.popen.wait(timeout=15) == 0
        gone, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"{model} left children behind: {alive}"
        for sock in socks:  # the server closed our connections rather than leaving them hanging
            assert readable_within(sock, 5)
        assert p.popen.stdout is not None
        assert p.popen.stdout.read() == "", "only the parent may print (once)"
    finally:
        for sock in socks:
            sock.close()


# -- usage errors -----------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [procs.PYTHON, "-m", "servers", "tcp", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=procs.ROOT,
        env=procs.env(),
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "nope"],
        ["--workers", "0"],
        ["--workers", "many"],
        ["--backlog", "-1"],
        ["--max-connections", "x"],
        ["--port", "70000"],
    ],
)
def test_bad_flags_are_one_line_exit_2(args: list[str]) -> None:
    result = run_cli("--port", "0", *args) if args[0] != "--port" else run_cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("model", ["asyncio", "prefork", "fork"])
def test_port_in_use_is_one_line_exit_2(model: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("--model", model, "--port", str(taken.getsockname()[1]))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- robustness of the process models and the wait loops --------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_stop_and_continue_interrupts_are_retried(model: str, tcp: StartTcp) -> None:
    """SIGSTOP/SIGCONT make Linux return EINTR from poll/select/epoll_wait even without a
    handler: every model must carry on mid-conversation (PEP 475 retries), not fail."""
    p = tcp(model)
    with connect(p.port) as sock:
        for i in range(15):
            sock.sendall(b"before %d" % i)
            os.killpg(p.pid, signal.SIGSTOP)
            os.killpg(p.pid, signal.SIGCONT)
            assert recv_exactly(sock, len(b"before %d" % i)) == b"before %d" % i
    assert_still_serving(p.port)


@pytest.mark.parametrize("model", CONNECTION_LIMITED)
def test_max_connections_leaves_the_rest_in_the_backlog(model: str, tcp: StartTcp) -> None:
    p = tcp(model, "--max-connections", "2")
    first, second, third = connect(p.port), connect(p.port), connect(p.port)
    assert echo(first, b"one") == b"one"
    assert echo(second, b"two") == b"two"
    third.sendall(b"three")
    assert not readable_within(third, 0.3), "a third connection was served despite the limit"
    first.close()
    assert recv_exactly(third, 5) == b"three"
    second.close()
    third.close()


@pytest.mark.parametrize("model", ["fork", "prefork"])
def test_children_die_with_a_killed_parent(model: str, tcp: StartTcp) -> None:
    """Even SIGKILL on the parent (no chance to clean up) leaves no orphan echo process."""
    p = tcp(model, "--workers", "2")
    with connect(p.port) as sock:
        assert echo(sock, b"hi") == b"hi"
        children = psutil.Process(p.pid).children()
        assert children
        p.popen.kill()
        p.popen.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphans left: {alive}"


def test_prefork_replaces_killed_workers(tcp: StartTcp) -> None:
    """Killing every worker — one of them holds the accept lock — must not wedge the server:
    the kernel drops a dead process's lockf lock and the parent starts replacements."""
    p = tcp("prefork", "--workers", "3")
    parent = psutil.Process(p.pid)
    old = parent.children()
    assert len(old) == 3
    for worker in old:
        worker.kill()
    psutil.wait_procs(old, timeout=10)
    assert_still_serving(p.port)
    deadline = time.monotonic() + 10
    while len(parent.children()) != 3 and time.monotonic() < deadline:
        psutil.wait_procs(parent.children(), timeout=0.1)
    assert len(parent.children()) == 3
    assert not {c.pid for c in old} & {c.pid for c in parent.children()}


@pytest.mark.parametrize("model", ["asyncio", "uvloop", "select", "epoll", "thread"])
def test_running_out_of_descriptors_refuses_cleanly(model: str, tcp: StartTcp) -> None:
    """With RLIMIT_NOFILE pinned low, surplus clients get a clean close (not a hang), the
    server neither crashes nor spins on its readable listener, and it serves again after."""
    p = tcp(model, prefix=[require_tool("prlimit"), "--nofile=64:64"])
    socks = [connect(p.port) for _ in range(100)]
    for sock in socks:
        sock.sendall(b"ping")
    served = refused = 0
    for sock in socks:
        try:
            got = sock.recv(4)
        except ConnectionResetError:
            got = b""
        served += got == b"ping"
        refused += got == b""
    assert served >= 20 and refused >= 20 and served + refused == len(socks)
    for sock in socks:
        sock.close()
    # Until the server has seen those closes it is still at its limit and refuses clients.
    deadline = time.monotonic() + 10
    while True:
        try:
            assert_still_serving(p.port)
            break
        except (ConnectionResetError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # poll the condition; the deadline bounds it
    warnings = p.stderr_text().count("out of file descriptors")
    assert 0 < warnings <= refused + 200, "a level-triggered loop spun on EMFILE"
