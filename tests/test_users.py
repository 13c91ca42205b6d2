"""What every transport's user must do the same way, run on each of them against its real echo
server in real Locust runs (one test body, parametrized over the transports — as uvicorn runs
its tests on every protocol backend). What only one transport has (the four gRPC kinds, the
WebSocket stats requests, TCP churn) lives in ``test_users_<transport>.py``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests import procs
from tests.fakes.runs import local_run

AUDIO = "locustfiles/audio_stream.py"


@dataclass(frozen=True)
class Transport:
    kind: str  # server kind and request_type
    server_args: tuple[str, ...]
    user_class: str  # in locustfiles/audio_stream.py
    option: str
    url: str  # the target option's value, from the server's HOST:PORT
    msg: str  # the per-message row name

    def target(self, server: procs.Proc) -> list[str]:
        return [self.option, self.url.format(server.target)]


TRANSPORTS = [
    Transport("tcp", ("--model", "asyncio"), "TcpAudio", "--tcp-target", "{}", "msg"),
    Transport("ws", (), "WsAudio", "--ws-url", "ws://{}/echo", "msg"),
    Transport("grpc", (), "GrpcAudio", "--grpc-target", "{}", "bidi msg"),
]
each_transport = pytest.mark.parametrize("t", TRANSPORTS, ids=[t.kind for t in TRANSPORTS])


@each_transport
@pytest.mark.timeout(60)
def test_paced_stream_counts_latency_and_no_failures(
    t: Transport, start_server: Callable[..., procs.Proc]
) -> None:
    server = start_server(t.kind, *t.server_args, "--delay-ms", "20")
    r = local_run(AUDIO, 2, 3.0, *t.target(server), classes=t.user_class)
    assert r.errors == 0
    assert r.failures() == {}
    assert r.names() == {(t.kind, "connect"), (t.kind, t.msg)}
    assert len(r.ok(t.kind, "connect")) == 2
    streams = r.per_stream(t.kind, t.msg)
    assert len(streams) == 2
    for rows in streams.values():
        # 10 msg/s for the ~3 s each stream lived (started at spawn, stopped at quit)
        assert 27 <= len(rows) <= 33, len(rows)
        assert sorted(s.seq for s in rows) == list(range(len(rows)))
    assert 20.0 <= r.p50_ms(t.kind, t.msg) <= 25.0
    # paced: consecutive intended send times are exactly one interval apart
    one = sorted(next(iter(streams.values())), key=lambda s: s.seq)
    assert {b.start_ns - a.start_ns for a, b in zip(one, one[1:], strict=False)} == {100_000_000}


@each_transport
@pytest.mark.timeout(60)
def test_pingpong_is_a_closed_loop(t: Transport, start_server: Callable[..., procs.Proc]) -> None:
    server = start_server(t.kind, *t.server_args)
    r = local_run(AUDIO, 1, 1.5, *t.target(server), "--mode", "pingpong", classes=t.user_class)
    assert r.failures() == {} and r.errors == 0
    rows = r.rows(t.kind, t.msg)
    assert len(rows) > 200  # loopback round trips take well under a millisecond each
    assert sorted(s.seq for s in rows) == list(range(len(rows)))
    assert all(s.lag_ns == 0 for s in rows)  # closed loop: sent when due, by definition
