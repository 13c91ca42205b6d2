"""The gevent paced-send scheduler: paced streams sharing it over real socket pairs (exact
schedules, a blocked stream does not hold up others, sub-millisecond wake-ups). The timetable
itself is tested without gevent in tests/test_stream_core.py."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest
from gevent import socket as gsocket

from echoswarm.measure import Sample, now_ns
from echoswarm.streams.core import StreamConfig
from echoswarm.users.gevent_stream import Stream
from echoswarm.users.scheduler import scheduler
from echoswarm.users.tcp import TcpLink


# ------------------------------------------------------------- streams on the scheduler
def paced(interval_ms: int, messages: int) -> StreamConfig:
    return StreamConfig(
        request_type="tcp",
        name="msg",
        interval_ns=interval_ms * 1_000_000,
        pingpong=False,
        max_messages=messages,
        duration_ns=None,
        timeout_ns=5_000_000_000,
        spread=False,  # exact schedules from the stream's start
    )


def echo(sock: gsocket.socket) -> None:
    while data := sock.recv(65536):
        sock.sendall(data)


@pytest.fixture
def pairs() -> Iterator[list[gsocket.socket]]:
    made: list[gsocket.socket] = []
    yield made
    for s in made:
        s.close()


def pair(made: list[gsocket.socket], sndbuf: int | None = None) -> tuple[TcpLink, gsocket.socket]:
    a, b = gsocket.socketpair()
    made += [a, b]
    if sndbuf:
        a.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_SNDBUF, sndbuf)
        b.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_RCVBUF, sndbuf)
    return TcpLink(a, 3200), b


@pytest.mark.timeout(30)
def test_streams_share_the_scheduler_exact_schedule_every_message_one_sample(
    pairs: list[gsocket.socket],
) -> None:
    samples: list[Sample] = []
    runs: list[tuple[Stream, gevent.Greenlet]] = []
    for _ in range(3):
        link, peer = pair(pairs)
        gevent.spawn(echo, peer)
        stream = Stream(paced(10, 15), samples.append, user_id=1, conn_id=len(runs), nbytes=3200)
        runs.append((stream, gevent.spawn(stream.run_paced, link)))
    gevent.joinall([g for _, g in runs], timeout=20, raise_error=True)
    assert all(g.dead for _, g in runs)
    assert len(samples) == 45 and all(s.ok for s in samples), [s.error for s in samples][:3]
    for stream, _ in runs:
        mine = sorted(
            (s for s in samples if s.conn_id == stream.inflight.conn_id), key=lambda s: s.seq
        )
        assert [s.seq for s in mine] == list(range(15))
        t0 = mine[0].intended_ns
        assert [s.intended_ns - t0 for s in mine] == [i * 10_000_000 for i in range(15)]
        assert all(s.sent_ns >= s.intended_ns and s.received_ns >= s.sent_ns for s in mine)
    assert len(scheduler().table) == 0  # every stream left the timetable when it ended


@pytest.mark.timeout(30)
def test_a_blocked_stream_does_not_hold_up_the_others_then_catches_up(
    pairs: list[gsocket.socket],
) -> None:
    samples: list[Sample] = []
    # Stream "stuck": its peer reads nothing until released, so its socket buffers fill up
    # after a few frames and a send would block.
    stuck_link, stuck_peer = pair(pairs, sndbuf=4096)
    stuck = Stream(paced(5, 60), samples.append, user_id=1, conn_id=1, nbytes=3200)
    free_link, free_peer = pair(pairs)
    gevent.spawn(echo, free_peer)
    free = Stream(paced(5, 60), samples.append, user_id=1, conn_id=2, nbytes=3200)
    threads = [gevent.spawn(stuck.run_paced, stuck_link), gevent.spawn(free.run_paced, free_link)]

    deadline = now_ns() + 10_000_000_000
    while free.sent < 40 and now_ns() < deadline:
        gevent.sleep(0.01)
    assert free.sent >= 40  # kept its schedule...
    assert stuck.sent < 20  # ...while the other one could not send
    gevent.spawn(echo, stuck_peer)  # release it: it catches up and finishes its schedule
    gevent.joinall(threads, timeout=20, raise_error=True)
    assert all(g.dead for g in threads)
    for conn in (1, 2):
        mine = sorted((s for s in samples if s.conn_id == conn), key=lambda s: s.seq)
        assert [s.seq for s in mine] == list(range(60)), conn
        assert all(s.ok for s in mine), [s.error for s in mine if not s.ok][:3]
        t0 = mine[0].intended_ns
        assert [s.intended_ns - t0 for s in mine] == [i * 5_000_000 for i in range(60)]
    # The stuck stream's late messages carry their lag: stamped when they really left.
    stuck_rows = [s for s in samples if s.conn_id == 1]
    assert max(s.lag_ns for s in stuck_rows) > 20_000_000


@pytest.mark.timeout(30)
def test_stopping_a_stream_on_the_scheduler_accounts_for_everything_in_flight(
    pairs: list[gsocket.socket],
) -> None:
    samples: list[Sample] = []
    link, peer = pair(pairs)  # the peer never answers: everything stays in flight
    stream = Stream(paced(5, 1_000), samples.append, user_id=1, conn_id=7, nbytes=3200)
    g = gevent.spawn(stream.run_paced, link)
    deadline = now_ns() + 10_000_000_000
    while stream.sent < 5 and now_ns() < deadline:
        gevent.sleep(0.01)
    g.kill()  # what Locust's stop does to the user's greenlet
    sent = stream.sent
    assert sent >= 5
    assert len(samples) == sent  # one sample per sent message, all "lost: test stopped"
    assert {s.error for s in samples} == {"lost: test stopped before the reply arrived"}
    # The stopped stream leaves the timetable at its next due time, having sent nothing more.
    while len(scheduler().table) and now_ns() < deadline:
        gevent.sleep(0.005)
    assert len(scheduler().table) == 0
    assert stream.sent == sent
