"""WebSocketUser against the real WebSocket echo server, in real Locust runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests import procs
from tests.fakes.runs import local_run

AUDIO = "locustfiles/audio_stream.py"
VARIANTS = "tests/fakes/ws_variants.py"


def url(server: procs.Proc) -> str:
    return f"ws://{server.target}/echo"


@pytest.mark.timeout(60)
def test_long_session_paced(start_server: Callable[..., procs.Proc]) -> None:
    server = start_server("ws", "--delay-ms", "20")
    r = local_run(AUDIO, 2, 3.0, "--ws-url", url(server), classes="WsAudio")
    assert r.errors == 0 and r.failures() == {}
    assert r.names() == {("ws", "connect"), ("ws", "msg")}
    streams = r.per_stream("ws", "msg")
    assert len(streams) == 2
    for rows in streams.values():
        assert 27 <= len(rows) <= 33, len(rows)
        assert sorted(s.seq for s in rows) == list(range(len(rows)))
    assert 20.0 <= r.p50_ms("ws", "msg") <= 25.0


@pytest.mark.timeout(60)
def test_short_requests_with_stats_work(start_server: Callable[..., procs.Proc]) -> None:
    server = start_server("ws", "--work", "stats", "--reply", "after")
    r = local_run(
        VARIANTS, 2, 2.0, "--ws-url", url(server), "--frame-bytes", "2000", classes="WsStatsRequest"
    )
    assert r.errors == 0 and r.failures() == {}
    assert r.names() == {("ws", "connect"), ("ws", "roundtrip"), ("ws", "session")}
    n = len(r.rows("ws", "roundtrip"))
    assert n >= 10
    # one connection per request: as many connects and sessions as round trips, give or take
    # the one per user the stop cut short (a cut session is not a sample)
    assert n <= len(r.rows("ws", "connect")) <= n + 2
    assert n - 2 <= len(r.rows("ws", "session")) <= n
    assert len({s.conn_id for s in r.rows("ws", "roundtrip")}) == n


@pytest.mark.timeout(60)
def test_text_session_pingpong(start_server: Callable[..., procs.Proc]) -> None:
    server = start_server("ws")
    r = local_run(
        VARIANTS, 1, 1.5, "--ws-url", url(server), "--mode", "pingpong", classes="WsTextSession"
    )
    assert r.errors == 0 and r.failures() == {}
    rows = r.rows("ws", "msg")
    assert len(rows) > 100
    assert sorted(s.seq for s in rows) == list(range(len(rows)))


@pytest.mark.timeout(60)
def test_stats_reply_that_is_a_plain_echo_is_a_failure(
    start_server: Callable[..., procs.Proc],
) -> None:
    # --work none echoes the STATS request back unchanged: not a STATS reply
    server = start_server("ws", "--work", "none")
    r = local_run(VARIANTS, 1, 1.0, "--ws-url", url(server), classes="WsStatsRequest")
    assert r.errors == 0
    assert set(r.failures("ws", "roundtrip")) == {"not a STATS reply"}
    assert len(r.ok("ws", "roundtrip")) == 0
