"""GrpcUser (all four RPC kinds) against the real gRPC echo server, in real Locust runs."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from echoswarm.results import read_run, read_summary
from tests import procs
from tests.fakes.runs import local_run, locust_headless

PATTERNS = "locustfiles/grpc_patterns.py"


@pytest.mark.timeout(60)
def test_every_rpc_kind_paced_against_a_delayed_server(
    start_server: Callable[..., procs.Proc],
) -> None:
    server = start_server("grpc", "--delay-ms", "20")
    r = local_run(
        PATTERNS, 4, 3.0, "--grpc-target", server.target, "--stream-messages", "10"
    )  # one user per kind; streaming calls carry 10 frames, one per 100 ms
    assert r.errors == 0 and r.failures() == {}, r.failures()
    assert r.names() == {
        ("grpc", "connect"),
        ("grpc", "unary"),
        ("grpc", "server_stream first"),
        ("grpc", "server_stream msg"),
        ("grpc", "client_stream"),
        ("grpc", "bidi msg"),
    }
    assert len(r.ok("grpc", "connect")) == 4
    for name in ("unary", "server_stream msg", "bidi msg"):
        assert 20.0 <= r.p50_ms("grpc", name) <= 25.0, (name, r.p50_ms("grpc", name))
    # time to first frame: request + the server's 20 ms + frame (only ~3 calls: no tight p50)
    firsts = [s.ms for s in r.ok("grpc", "server_stream first")]
    assert firsts and all(20.0 <= ms <= 60.0 for ms in firsts), firsts
    # paced unary: 10 calls/s for ~3 s
    assert 27 <= len(r.rows("grpc", "unary")) <= 33
    # bidi: each call carries exactly 10 frames, seq 0..9 (the last call may be cut by the stop)
    # (a new call starts as soon as the previous one is answered: ~10.8 msg/s overall)
    calls = sorted(r.rows("grpc", "bidi msg"), key=lambda s: s.start_ns)
    assert 27 <= len(calls) <= 37
    seqs = [s.seq for s in calls]
    assert seqs[:20] == list(range(10)) * 2
    # server stream: frame i measured against request time + i * 100 ms
    frames = r.rows("grpc", "server_stream msg")
    assert 25 <= len(frames) <= 40  # calls of 0.92 s back to back
    assert frames[:10] == sorted(frames[:10], key=lambda s: s.seq)
    # client stream: a whole paced upload of 10 frames takes ~0.9 s
    # (the one a stop cuts short ends early and counts only what it sent)
    uploads = r.ok("grpc", "client_stream")
    whole = [s for s in uploads if s.nbytes == 10 * (3200 - 32)]
    assert 2 <= len(whole) and len(uploads) - len(whole) <= 1
    assert all(880 <= s.ms <= 1100 for s in whole), [s.ms for s in whole]


@pytest.mark.timeout(60)
def test_every_rpc_kind_pingpong(start_server: Callable[..., procs.Proc]) -> None:
    server = start_server("grpc")
    r = local_run(
        PATTERNS, 4, 1.5, "--grpc-target", server.target, "--mode", "pingpong",
        "--stream-messages", "20",
    )  # fmt: skip
    assert r.errors == 0 and r.failures() == {}, r.failures()
    for name in ("unary", "server_stream msg", "bidi msg"):
        assert len(r.rows("grpc", name)) > 50, name
    assert len(r.rows("grpc", "client_stream")) > 5


@pytest.mark.timeout(90)
def test_processes_2_headless_runs_and_stops_cleanly(
    start_server: Callable[..., procs.Proc], tmp_path: Path
) -> None:
    server = start_server("grpc", "--delay-ms", "5")
    done, rows = locust_headless(
        PATTERNS,
        4,
        "4s",
        "--processes",
        "2",
        "--grpc-target",
        server.target,
        "--stream-messages",
        "5",
        csv_prefix=tmp_path / "p2",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    at = done.stderr.find("Traceback")
    assert at < 0, done.stderr[max(0, at - 500) : at + 3000]
    for name in ("connect", "unary", "server_stream first", "server_stream msg", "bidi msg"):
        assert int(rows[("grpc", name)]["count"]) > 0, name
    assert all(int(v["failures"]) == 0 for v in rows.values()), rows
    assert int(rows[("grpc", "connect")]["count"]) == 4


@pytest.mark.timeout(120)
def test_every_rpc_kind_through_a_master_and_two_workers(tmp_path: Path) -> None:
    """`python -m echoswarm run`: a Locust master, two workers (each with its own gRPC driver
    process) and the server it starts; every kind's rows reach the merged results."""
    results = tmp_path / "run"
    done = subprocess.run(
        [procs.PYTHON, "-m", "echoswarm", "run", PATTERNS, "--workers", "2", "-u", "8",
         "-r", "8", "-t", "5s", "--results", str(results), "--no-report",
         "--", "--stream-messages", "5"],
        cwd=procs.ROOT, env=procs.env(), capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = {(r["request_type"], r["name"]): r for r in read_summary(results)}
    for name in ("connect", "unary", "server_stream first", "server_stream msg", "client_stream",
                 "bidi msg"):  # fmt: skip
        assert rows[("grpc", name)]["count"] > 0, name
        assert rows[("grpc", name)]["failures"] == 0, (name, rows[("grpc", name)])
    workers = read_run(results)["workers"]
    assert len(workers) == 2 and all(w["samples"] > 0 for w in workers)
