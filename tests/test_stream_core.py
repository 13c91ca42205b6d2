"""The gevent-free stream core (schedule, in-flight matching, expiry, drain, ping-pong
decisions) and the due-time timetable, driven by hand with an injected clock: no sockets, no
event loop."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from echoswarm.measure import Sample
from echoswarm.streams.core import (
    LOST_ON_STOP,
    Backoff,
    StreamConfig,
    StreamCore,
    check_echo,
)
from echoswarm.streams.pacer import Timetable
from echoswarm.wire import FrameTemplate

MS = 1_000_000


def config(
    *,
    interval_ms: int = 100,
    pingpong: bool = False,
    messages: int | None = None,
    seconds: float | None = None,
    timeout_ms: int = 1_000,
    spread: bool = False,  # exact schedules below; phases have their own test
) -> StreamConfig:
    return StreamConfig(
        request_type="tcp",
        name="msg",
        interval_ns=interval_ms * MS,
        pingpong=pingpong,
        max_messages=messages,
        duration_ns=int(seconds * 1e9) if seconds else None,
        timeout_ns=timeout_ms * MS,
        spread=spread,
    )


def core_of(cfg: StreamConfig) -> tuple[StreamCore, list[Sample]]:
    samples: list[Sample] = []
    return StreamCore(cfg, samples.append, user_id=3, conn_id=7, nbytes=3200), samples


def test_paced_messages_are_due_on_the_schedule_and_timed_from_it() -> None:
    core, samples = core_of(config(interval_ms=100, messages=3))
    core.start(1_000 * MS)
    stamps = []
    while (due := core.due_ns()) is not None:
        sent = due + 2 * MS  # every send 2 ms late
        stamps.append(core.take(sent))
    assert stamps == [(i, (1_000 + 100 * i) * MS, (1_002 + 100 * i) * MS) for i in range(3)]
    for seq, intended, sent in stamps:
        core.on_reply(seq, intended, sent, intended + 5 * MS, None)
    assert [s.seq for s in samples] == [0, 1, 2] and all(s.ok for s in samples)
    assert {s.latency_ns for s in samples} == {5 * MS}  # from the intended time, lag included
    assert {s.lag_ns for s in samples} == {2 * MS} and {s.service_ns for s in samples} == {3 * MS}
    assert (samples[0].user_id, samples[0].conn_id, samples[0].nbytes) == (3, 7, 3200)


def test_streams_started_together_get_phases_spread_over_the_interval() -> None:
    starts = []
    for _ in range(240):
        core, _ = core_of(config(interval_ms=100, spread=True))
        core.start(5_000 * MS)  # all at the same instant, as one Locust spawn batch
        starts.append(core.due_ns())
    phases = sorted((due or 0) - 5_000 * MS for due in starts)
    assert 0 <= phases[0] and phases[-1] < 100 * MS
    # evenly spread: every 10 ms slice of the interval holds 24 +- 3 of the 240 streams
    per_slice = [sum(1 for p in phases if k * 10 * MS <= p < (k + 1) * 10 * MS) for k in range(10)]
    assert all(21 <= n <= 27 for n in per_slice), per_slice
    core, _ = core_of(config(interval_ms=100, spread=True, pingpong=True))
    core.start(7 * MS)
    assert core.due_ns(7 * MS) == 7 * MS  # the closed loop starts at once
    aligned, _ = core_of(config(interval_ms=100))
    aligned.start(7 * MS)
    assert aligned.due_ns() == 7 * MS


def test_a_stream_length_in_seconds_ends_before_the_first_message_at_or_past_it() -> None:
    core, _ = core_of(config(interval_ms=100, seconds=0.35))
    core.start(0)
    dues = []
    while (due := core.due_ns()) is not None:
        dues.append(due)
        core.take(due)
    assert dues == [0, 100 * MS, 200 * MS, 300 * MS]


def test_a_late_sender_keeps_the_intended_times_so_the_lag_counts() -> None:
    core, samples = core_of(config(interval_ms=10, messages=5))
    core.start(0)
    stalled_until = 45 * MS  # the sender could not run until 45 ms: 5 messages due by then
    sent = [core.take(stalled_until) for _ in range(5)]
    assert [s[1] for s in sent] == [0, 10 * MS, 20 * MS, 30 * MS, 40 * MS]
    for seq, intended, at in sent:
        core.on_reply(seq, intended, at, 46 * MS, None)
    assert [s.latency_ns for s in samples] == [46 * MS - i * 10 * MS for i in range(5)]


def test_replies_out_of_order_unknown_or_with_wrong_stamps_are_failures() -> None:
    core, samples = core_of(config(messages=4))
    core.start(0)
    stamps = [core.take(core.due_ns() or 0) for _ in range(3)]
    seq, intended, sent = stamps[1]
    core.on_reply(seq, intended, sent, 500 * MS, None)  # overtakes seq 0
    core.on_reply(0, stamps[0][1] + 1, stamps[0][2], 500 * MS, None)  # stamps differ
    core.on_reply(99, 0, 0, 500 * MS, None)  # never sent
    errors = [s.error for s in samples]
    assert errors == [
        "out of order: reply overtook an older outstanding message",
        "echo mismatch in the header timestamps",
        "reply for an unknown seq (never sent, already answered or timed out)",
    ]
    assert core.outstanding == 1  # seq 2


def test_overdue_replies_expire_once_at_the_next_send_and_late_ones_are_not_counted() -> None:
    core, samples = core_of(config(interval_ms=100, timeout_ms=250))
    core.start(0)
    first = core.take(0)
    for _ in range(3):
        core.take(core.due_ns() or 0)  # at 100, 200, 300 ms: seq 0 expires at 300
    assert [(s.seq, s.error) for s in samples] == [(0, "timeout: no reply within 0.25 s")]
    core.on_reply(*first, 310 * MS, None)  # the late reply of seq 0
    assert len(samples) == 1 and core.inflight.late == 1
    assert samples[0].latency_ns == 300 * MS  # counted until it was given up


def test_a_reply_later_than_the_timeout_is_that_timeout_even_before_it_was_expired() -> None:
    """A stalled link can hold up the send that would have expired the message: the reply
    that finally comes, 1.2 s after its intended time with a 1 s timeout, is no success."""
    core, samples = core_of(config(interval_ms=100, timeout_ms=1_000))
    core.start(0)
    stamp = core.take(0)
    core.on_reply(*stamp, 1_200 * MS, None)
    assert [(s.seq, s.error) for s in samples] == [(0, "timeout: no reply within 1 s")]
    assert samples[0].latency_ns == 1_200 * MS and samples[0].received_ns == 0
    assert core.inflight.late == 1 and core.outstanding == 0
    on_time = core.take(core.due_ns() or 0)
    core.on_reply(*on_time, on_time[1] + 999 * MS, None)  # just inside the timeout: ok
    assert samples[-1].ok


def test_drain_after_the_last_send_waits_for_the_newest_deadline_then_times_out() -> None:
    core, samples = core_of(config(interval_ms=100, messages=2, timeout_ms=1_000))
    core.start(0)
    a = core.take(0)
    core.take(100 * MS)
    assert core.due_ns() is None
    core.begin_drain()
    assert not core.drained
    assert core.drain_wait_ns(200 * MS) == 900 * MS  # until seq 1's timeout at 1.1 s
    assert core.on_reply(*a, 250 * MS, None) is False  # seq 1 still outstanding
    assert core.drain_wait_ns(1_100 * MS) == 0
    assert core.drained
    assert [s.error for s in samples] == [None, "timeout: no reply within 1 s"]


def test_drain_ends_when_the_last_reply_arrives() -> None:
    core, _ = core_of(config(messages=1))
    core.start(0)
    stamp = core.take(0)
    core.begin_drain()
    assert core.on_reply(*stamp, 3 * MS, None) is True
    assert core.drained and core.drain_wait_ns(4 * MS) == 0


def test_a_stop_sends_nothing_more_and_what_is_outstanding_is_lost() -> None:
    core, samples = core_of(config())
    core.start(0)
    stamps = [core.take(core.due_ns() or 0) for _ in range(3)]
    core.on_reply(*stamps[0], 10 * MS, None)
    core.stop()
    assert core.due_ns() is None
    core.begin_drain()
    assert core.lost_on_stop(250 * MS) == 2
    assert [s.error for s in samples] == [None, f"lost: {LOST_ON_STOP}", f"lost: {LOST_ON_STOP}"]
    assert core.finish(300 * MS) == 0  # nothing left: idempotent


def test_a_broken_stream_fails_what_is_outstanding_with_its_reason() -> None:
    core, samples = core_of(config())
    core.start(0)
    core.take(0)
    core.fail("connection reset by peer")
    core.fail("a later reason is not kept")
    assert core.due_ns() is None
    assert core.finish(5 * MS) == 1
    assert samples[0].error == "lost: connection reset by peer"
    assert samples[0].received_ns == 0  # a failure has no reply time


def test_pingpong_sends_when_answered_and_a_timeout_ends_the_stream() -> None:
    core, samples = core_of(config(pingpong=True, messages=10, timeout_ms=300))
    core.start(0)
    assert core.due_ns(5 * MS) == 5 * MS
    seq, intended, sent = core.take(5 * MS)
    assert intended == sent == 5 * MS  # closed loop: intended = sent
    core.on_reply(seq, intended, sent, 7 * MS, None)
    core.take(7 * MS)
    core.pingpong_timeout(400 * MS)
    assert core.due_ns(400 * MS) is None and core.error == "timeout"
    assert [s.error for s in samples] == [None, "timeout: no reply within 0.3 s"]


def test_stream_config_crosses_the_wire_unchanged() -> None:
    cfg = config(interval_ms=20, pingpong=True, messages=7, seconds=1.5, timeout_ms=800)
    assert StreamConfig.from_wire(cfg.as_wire()) == cfg
    spread = config(interval_ms=20, spread=True)
    assert StreamConfig.from_wire(spread.as_wire()) == spread
    assert (
        config(timeout_ms=800).stop_drain_s == 0.8 and config(timeout_ms=5_000).stop_drain_s == 2.0
    )


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.1, 0.5)
    assert [b.next_delay() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    b.reset()
    assert b.next_delay() == 0.1


def test_check_echo_takes_the_stamps_and_names_the_first_wrong_byte() -> None:
    template = FrameTemplate(64)
    expect = bytearray(template.stamp(0, 0, 0))
    echo = bytes(FrameTemplate(64).stamp(5, 6, 7))
    assert check_echo(echo, expect) == (5, 6, 7, None)
    bad = bytearray(echo)
    bad[40] ^= 0xFF
    seq, _, _, error = check_echo(bytes(bad), expect)
    assert seq == 5 and error is not None and error.startswith("echo mismatch at byte 40")


Op = tuple[str, int]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["send", "reply", "late", "stop", "break"]), st.integers(0, 50)),
        max_size=60,
    ),
    st.booleans(),
)
def test_every_message_sent_ends_as_exactly_one_sample(ops: list[Op], pingpong: bool) -> None:
    """Whatever happens (replies in any order, delays past the timeout, stop, a broken
    connection), each message put in flight gives one sample, and nothing else does."""
    core, samples = core_of(config(interval_ms=10, pingpong=pingpong, timeout_ms=100))
    now = 0
    core.start(now)
    sent: dict[int, tuple[int, int, int]] = {}
    for op, arg in ops:
        now += arg * MS
        if op == "send" and core.due_ns(now) is not None:
            stamp = core.take(now)
            sent[stamp[0]] = stamp
        elif op in ("reply", "late") and sent:
            seq = sorted(sent)[arg % len(sent)]
            core.on_reply(*sent[seq], now, None)
        elif op == "stop":
            core.stop()
        elif op == "break":
            core.fail("connection reset by peer")
    core.begin_drain()
    core.drain_wait_ns(now + 10_000 * MS)
    core.finish(now + 10_000 * MS)
    per_message = [s for s in samples if s.error is None or not s.error.startswith("reply for an")]
    assert sorted(s.seq for s in per_message) == sorted(sent)


# ----------------------------------------------------------------------------- timetable
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
