"""TcpUser against the real TCP echo server, in real Locust runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests import procs
from tests.fakes.runs import local_run, locust_headless

AUDIO = "locustfiles/audio_stream.py"
CHURN = "locustfiles/tcp_churn.py"


@pytest.mark.timeout(60)
def test_paced_stream_counts_latency_and_no_failures(
    start_server: Callable[..., procs.Proc],
) -> None:
    server = start_server("tcp", "--model", "asyncio", "--delay-ms", "20")
    r = local_run(AUDIO, 2, 3.0, "--tcp-target", server.target, classes="TcpAudio")
    assert r.errors == 0
    assert r.failures() == {}
    assert {("tcp", "connect"), ("tcp", "msg")} == r.names()
    assert len(r.ok("tcp", "connect")) == 2
    streams = r.per_stream("tcp", "msg")
    assert len(streams) == 2
    for rows in streams.values():
        # 10 msg/s for the ~3 s each stream lived (started at spawn, stopped at quit)
        assert 27 <= len(rows) <= 33, len(rows)
        assert sorted(s.seq for s in rows) == list(range(len(rows)))
    assert 20.0 <= r.p50_ms("tcp", "msg") <= 25.0
    # paced: consecutive intended send times are exactly one interval apart
    one = sorted(next(iter(streams.values())), key=lambda s: s.seq)
    assert {b.start_ns - a.start_ns for a, b in zip(one, one[1:], strict=False)} == {100_000_000}


@pytest.mark.timeout(60)
def test_pingpong_is_a_closed_loop(start_server: Callable[..., procs.Proc]) -> None:
    server = start_server("tcp", "--model", "asyncio")
    r = local_run(
        AUDIO, 1, 1.5, "--tcp-target", server.target, "--mode", "pingpong", classes="TcpAudio"
    )
    assert r.failures() == {} and r.errors == 0
    rows = r.rows("tcp", "msg")
    assert len(rows) > 200  # loopback round trips take well under a millisecond each
    assert sorted(s.seq for s in rows) == list(range(len(rows)))
    assert all(s.lag_ns == 0 for s in rows)  # closed loop: sent when due, by definition


@pytest.mark.timeout(60)
def test_churn_headless_connections_round_trips_and_sessions(
    start_server: Callable[..., procs.Proc], tmp_path: Path
) -> None:
    server = start_server("tcp", "--model", "select")
    done, rows = locust_headless(
        CHURN,
        2,
        "3s",
        "--tcp-target",
        server.target,
        "--connections-per-user",
        "3",
        "--round-trips",
        "5",
        "--frame-bytes",
        "64",
        csv_prefix=tmp_path / "churn",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    counts = {key: (int(v["count"]), int(v["failures"])) for key, v in rows.items()}
    assert counts[("tcp", "connect")] == (6, 0)  # 2 users x 3 connections
    assert counts[("tcp", "msg")] == (30, 0)  # x 5 round trips each
    assert counts[("tcp", "session")] == (6, 0)
    assert int(rows[("tcp", "session")]["bytes"]) == 6 * 5 * 64
