"""Failure paths of every user, against real (and deliberately misbehaving) servers: a server
down at start, killed mid-stream, stalled, slow (timeouts), or corrupting its echo. Failures
must be counted with a clear message, nothing may raise into Locust, and runs end on time."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import procs
from tests.fakes.runs import LiveRun, Result, local_run

AUDIO = "locustfiles/audio_stream.py"
MSG_ROWS = (("grpc", "bidi msg"), ("ws", "msg"), ("tcp", "msg"))
MS = 1_000_000


def targets(grpc: procs.Proc, ws: procs.Proc, tcp: procs.Proc) -> list[str]:
    return [
        "--grpc-target", grpc.target, "--ws-url", f"ws://{ws.target}/echo",
        "--tcp-target", tcp.target,
    ]  # fmt: skip


def three(start: Callable[..., procs.Proc], *args: str) -> tuple[procs.Proc, ...]:
    return (
        start("grpc", *args),
        start("ws", *args),
        start("tcp", "--model", "asyncio", *args),
    )


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_clean_exit(r: Result) -> None:
    assert r.errors == 0, r.stderr[-2000:]  # nothing raised out of a task
    assert r.quit_took < 2.5, r.quit_took  # stopping is bounded (stop drain <= 2 s)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


@pytest.mark.timeout(60)
def test_server_down_at_start_counts_connect_failures_and_backs_off() -> None:
    port = free_port()
    r = local_run(
        AUDIO, 3, 2.0,
        "--grpc-target", f"127.0.0.1:{port}", "--ws-url", f"ws://127.0.0.1:{port}/echo",
        "--tcp-target", f"127.0.0.1:{port}", "--reply-timeout-s", "0.5",
    )  # fmt: skip
    assert_clean_exit(r)
    assert r.names() == {("grpc", "connect"), ("ws", "connect"), ("tcp", "connect")}
    assert set(r.failures("tcp")) == {"connection refused"}
    assert set(r.failures("ws")) == {"connection refused"}
    assert set(r.failures("grpc")) == {"not ready within 0.5 s (server down or unreachable)"}
    for kind in ("tcp", "ws"):
        # backoff 0.1, 0.2, 0.4, 0.8 s ...: a handful of attempts in 2 s, not a busy loop
        assert 3 <= len(r.rows(kind, "connect")) <= 7, (kind, len(r.rows(kind, "connect")))


@pytest.mark.timeout(60)
def test_server_killed_mid_stream_loses_in_flight_messages_then_reconnect_fails(
    start_server: Callable[..., procs.Proc], tmp_path: Path
) -> None:
    servers = three(start_server, "--delay-ms", "150")  # > interval: always 1-2 in flight
    run = LiveRun(tmp_path, AUDIO, 3, 2.5, *targets(*servers), "--reply-timeout-s", "0.8")
    run.wait_started()
    time.sleep(1.0)  # let the streams run (the stimulus schedule, not a synchronisation)
    for s in servers:
        s.popen.send_signal(signal.SIGKILL)
    r = run.result()
    assert_clean_exit(r)
    for type_, name in MSG_ROWS:
        assert len(r.ok(type_, name)) >= 5, (type_, name)
        lost = [e for e in r.failures(type_, name) if e.startswith("lost: ")]
        assert lost, (type_, r.failures(type_, name))
        assert r.failures(type_, "connect"), type_  # the reconnects fail: nobody listens
    assert set(r.failures("tcp", "msg")) <= {
        "lost: connection closed by peer",
        "lost: connection reset by peer",
    }
    assert set(r.failures("grpc", "bidi msg")) == {
        "lost: unavailable (server down or connection lost)"
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["paced", "pingpong"])
def test_slow_server_gives_timeouts_each_message_counted_once(
    start_server: Callable[..., procs.Proc], mode: str
) -> None:
    servers = three(start_server, "--delay-ms", "1000")
    r = local_run(AUDIO, 3, 2.0, *targets(*servers), "--reply-timeout-s", "0.3", "--mode", mode)
    assert_clean_exit(r)
    timeout = "timeout: no reply within 0.3 s"
    for type_, name in MSG_ROWS:
        rows = r.rows(type_, name)
        assert not r.ok(type_, name)
        assert set(r.failures(type_, name)) <= {
            timeout,
            "lost: test stopped before the reply arrived",
        }, r.failures(type_, name)
        if mode == "paced":
            # the sender keeps its schedule; every message times out on its own
            assert len(rows) >= 15, (type_, len(rows))
            assert r.failures(type_, name)[timeout] >= 12
            # one sample per message: late replies of timed-out messages are not counted again
            seqs = [s.seq for s in rows]
            assert sorted(seqs) == list(range(len(seqs))), (type_, seqs)
        else:
            # closed loop: a timeout ends the stream (it is out of step) and a new one starts:
            # on a new connection (tcp, ws), or a new call on the same channel (grpc)
            assert 3 <= r.failures(type_, name)[timeout] <= 8, (type_, r.failures(type_, name))
            assert all(s.seq == 0 for s in rows)
            assert len(r.ok(type_, "connect")) >= (1 if type_ == "grpc" else 3)


@pytest.mark.timeout(60)
def test_corrupted_echo_is_a_failure_naming_the_byte(
    tmp_path: Path,
) -> None:
    fakes = [
        procs.start(
            [
                procs.PYTHON,
                "-m",
                "tests.fakes.flipper",
                kind,
                "--every",
                "5",
                "--offset",
                "100",
                "--ping-every",
                "3",
            ],
            tmp_path=tmp_path / kind,
        )
        for kind in ("grpc", "ws", "tcp")
    ]
    try:
        r = local_run(AUDIO, 3, 2.0, *targets(*fakes))
    finally:
        for f in fakes:
            f.stop()
    assert_clean_exit(r)
    expected = {
        # frame byte 100 is payload byte 68 (0x44) for ws/tcp; gRPC flips payload byte 100
        ("tcp", "msg"): "echo mismatch at byte 100: sent 0x44, got 0xbb",
        ("ws", "msg"): "echo mismatch at byte 100: sent 0x44, got 0xbb",
        ("grpc", "bidi msg"): "echo mismatch at byte 100: sent 0x64, got 0x9b",
    }
    for (type_, name), message in expected.items():
        rows = sorted(r.rows(type_, name), key=lambda s: s.seq)
        assert len(rows) >= 15
        bad = [s.seq for s in rows if s.error is not None]
        assert set(r.failures(type_, name)) == {message}
        assert bad == [s.seq for s in rows if s.seq % 5 == 0]  # exactly the flipped ones


@pytest.mark.timeout(60)
def test_stalled_server_shows_in_every_message_scheduled_during_the_stall(
    start_server: Callable[..., procs.Proc], tmp_path: Path
) -> None:
    servers = three(start_server)
    run = LiveRun(tmp_path, AUDIO, 3, 3.0, *targets(*servers))
    run.wait_started()
    time.sleep(0.8)  # streams running (stimulus schedule)
    t_stop = time.monotonic_ns()  # CLOCK_MONOTONIC is system-wide: comparable with the child's
    for server in servers:
        server.popen.send_signal(signal.SIGSTOP)
    time.sleep(1.0)  # the stall
    t_cont = time.monotonic_ns()
    for server in servers:
        server.popen.send_signal(signal.SIGCONT)
    r = run.result()
    assert_clean_exit(r)
    assert r.failures() == {}
    for type_, name in MSG_ROWS:
        rows = r.rows(type_, name)
        during = [s for s in rows if t_stop <= s.start_ns < t_cont]
        # the sender kept its schedule through the stall: ~10 messages were scheduled in it
        assert 9 <= len(during) <= 11, (type_, len(during))
        for s in during:
            # each waited at least until the server resumed, measured from its intended time
            assert s.latency_ns >= t_cont - s.start_ns - 2 * MS, (type_, s)
        slow = [s for s in rows if s.latency_ns >= 500 * MS]
        first_half = [s for s in during if s.start_ns <= t_cont - 500 * MS]
        assert abs(len(slow) - len(first_half)) <= 1, (type_, len(slow), len(first_half))
        assert len(slow) >= 4
