"""WebSocketUser against the real WebSocket echo server, in real Locust runs: what only WebSocket
has (stats requests, text sessions); the paced and ping-pong streams every transport shares are
in ``test_users.py``."""

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
def test_short_stats_requests_and_a_text_session(start_server: Callable[..., procs.Proc]) -> None:
    # one stats server serves both users: STATS frames get STATS replies, text is echoed as is
    server = start_server("ws", "--work", "stats", "--reply", "after")
    r = local_run(
        VARIANTS, 2, 2.0, "--ws-url", url(server), "--frame-bytes", "2000", "--mode", "pingpong",
        classes="WsStatsRequest,WsTextSession",
    )  # fmt: skip
    assert r.errors == 0 and r.failures() == {}, r.failures()
    assert r.names() == {("ws", "connect"), ("ws", "roundtrip"), ("ws", "session"), ("ws", "msg")}
    n = len(r.rows("ws", "roundtrip"))
    assert n >= 10
    # one connection per request: as many connects and sessions as round trips, give or take
    # the one the stop cut short (a cut session is not a sample); +1 connect: the text session
    assert n + 1 <= len(r.rows("ws", "connect")) <= n + 2
    assert n - 1 <= len(r.rows("ws", "session")) <= n
    assert len({s.conn_id for s in r.rows("ws", "roundtrip")}) == n
    # the text session: a closed loop on one connection
    text = r.rows("ws", "msg")
    assert len(text) > 100
    assert sorted(s.seq for s in text) == list(range(len(text)))
    assert len({s.conn_id for s in text}) == 1


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
