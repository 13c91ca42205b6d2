"""TcpUser against the real TCP echo server, in real Locust runs: what only TCP has (short-lived
connections); the paced and ping-pong streams every transport shares are in ``test_users.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests import procs
from tests.fakes.runs import locust_headless

AUDIO = "locustfiles/audio_stream.py"
CHURN = "locustfiles/tcp_churn.py"


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
