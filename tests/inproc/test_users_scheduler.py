"""The paced-send scheduler: the sans-I/O timetable (ordering, exact per-stream schedules) and
paced streams sharing it over real socket pairs (a blocked stream does not hold up others)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gevent
import pytest
from gevent import socket as gsocket

from echoswarm.measure import Sample, now_ns
from echoswarm.users._scheduler import Timetable, scheduler
from echoswarm.users._stream import Stream, StreamConfig
from echoswarm.users.tcp import TcpLink


class Clock:
    """A hand-driven clock for the timetable."""

    def __init__(self, t: int = 1_000) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def test_timetable_runs_due_entries_in_due_order_ties_first_come() -> None:
    clock = Clock(100)
    table = Timetable(clock)
    calls: list[str] = []

    def once(name: str) -> Callable[[], None]:
        def fire() -> None:
            calls.append(name)

        return fire

    for due, name in [(150, "c"), (90, "a"), (120, "b1"), (120, "b2"), (100, "a2"), (300, "d")]:
        table.add(due, once(name))
    assert table.run_due() == 120  # only what is due by 100, then the next due time
    assert calls == ["a", "a2"]
    clock.t = 200
    assert table.run_due() == 300
    assert calls == ["a", "a2", "b1", "b2", "c"]
    clock.t = 300
    assert table.run_due() is None and len(table) == 0
    assert calls[-1] == "d"


def test_timetable_keeps_each_stream_on_its_exact_schedule_whatever_the_wakeups() -> None:
    clock = Clock(0)
    table = Timetable(clock)
    seen: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}

    def stream(name: str, t0: int, interval: int, count: int) -> None:
        seq = [0]

        def fire() -> int | None:
            due = t0 + seq[0] * interval
            seen[name].append((due, clock.t))
            seq[0] += 1
            return t0 + seq[0] * interval if seq[0] < count else None

        table.add(t0, fire)

    stream("a", 0, 100, 20)
    stream("b", 37, 70, 25)
    # Irregular, sometimes very late wake-ups (a stalled loop): the due times never drift.
    for t in [0, 5, 99, 250, 251, 900, 901, 1_500, 1_501, 1_502, 5_000]:
        clock.t = t
        table.run_due()
    assert [d for d, _ in seen["a"]] == [i * 100 for i in range(20)]
    assert [d for d, _ in seen["b"]] == [37 + i * 70 for i in range(25)]
    for calls in seen.values():
        assert all(at >= due for due, at in calls)  # never before its due time


def test_timetable_rereads_the_clock_and_drops_a_failing_entry() -> None:
    clock = Clock(0)
    table = Timetable(clock)
    order: list[str] = []

    def slow() -> None:
        order.append("slow")
        clock.t += 50  # this call took 50 ns: "late" fell due meanwhile

    def late() -> None:
        order.append("late")

    def broken() -> int:
        order.append("broken")
        raise RuntimeError("bug")

    table.add(0, broken)
    table.add(0, slow)
    table.add(40, late)
    assert table.run_due() is None
    assert order == ["broken", "slow", "late"]


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
