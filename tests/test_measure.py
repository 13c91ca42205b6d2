"""The measurement core, without sockets: schedules, in-flight matching, timers, echo diffs."""

from __future__ import annotations

import time

import pytest

from echoswarm import measure
from echoswarm.measure import (
    NO_SEQ,
    InFlight,
    Sample,
    Schedule,
    Timer,
    first_difference,
    latency_us,
    to_epoch_ns,
)

MS = 1_000_000


def make(timeout_ms: int = 1000) -> tuple[InFlight, list[Sample]]:
    out: list[Sample] = []
    return InFlight(out.append, "tcp", "msg", user_id=7, conn_id=3, timeout_ns=timeout_ms * MS), out


# --- Schedule -------------------------------------------------------------------------------


def test_schedule_due_times_are_t0_plus_i_intervals_without_drift() -> None:
    s = Schedule(100 * MS, t0_ns=5_000)
    assert [s.due_ns(i) for i in range(4)] == [
        5_000,
        5_000 + 100 * MS,
        5_000 + 200 * MS,
        5_000 + 300 * MS,
    ]
    assert s.due_ns(1_000_000) == 5_000 + 1_000_000 * 100 * MS  # no float accumulation


def test_schedule_wait_is_zero_when_overdue_and_positive_before() -> None:
    s = Schedule(50 * MS)
    assert s.wait_s(0) == 0
    later = s.wait_s(100)  # due 5 s after t0
    assert 4.9 < later <= 5.0
    past = Schedule(10 * MS, t0_ns=measure.now_ns() - 10_000 * MS)
    assert past.wait_s(5) == 0


def test_schedule_zero_interval_means_everything_due_now() -> None:
    s = Schedule(0, t0_ns=42)
    assert s.due_ns(0) == s.due_ns(999) == 42


def test_schedule_rejects_negative_interval() -> None:
    with pytest.raises(ValueError):
        Schedule(-1)


def test_schedule_seqs() -> None:
    assert list(Schedule(1).seqs(3)) == [0, 1, 2]
    it = Schedule(1).seqs()
    assert [next(it) for _ in range(3)] == [0, 1, 2]


# --- InFlight -------------------------------------------------------------------------------


def test_reply_in_order_gives_latency_from_intended_and_records_lag_and_service() -> None:
    f, out = make()
    f.add(0, intended_ns=1_000 * MS, sent_ns=1_002 * MS, nbytes=3200)
    s = f.received(0, received_ns=1_025 * MS)
    assert s is out[0] and len(f) == 0
    assert s.ok and s.latency_ns == 25 * MS and s.start_ns == 1_000 * MS
    assert s.lag_ns == 2 * MS and s.service_ns == 23 * MS
    assert (s.request_type, s.name, s.nbytes, s.user_id, s.conn_id, s.seq) == (
        "tcp", "msg", 3200, 7, 3, 0,
    )  # fmt: skip
    assert f.completed == 1 and f.failed == 0


def test_content_error_is_a_failed_sample_with_the_message() -> None:
    f, out = make()
    f.add(0, 0 + MS, MS, 10)
    f.received(0, 5 * MS, error="echo mismatch at byte 3: sent 0x03, got 0xfc")
    assert out[0].error == "echo mismatch at byte 3: sent 0x03, got 0xfc"
    assert f.failed == 1 and f.completed == 0


def test_echoed_stamps_must_equal_the_ones_sent_for_that_seq() -> None:
    f, out = make()
    f.add(0, 1 * MS, 2 * MS, 10)
    f.add(1, 3 * MS, 4 * MS, 10)
    f.received(0, 5 * MS, None, 1 * MS, 2 * MS)
    f.received(1, 6 * MS, None, 3 * MS, 9 * MS)
    assert [s.error for s in out] == [None, "echo mismatch in the header timestamps"]


def test_reply_overtaking_an_older_message_is_out_of_order() -> None:
    f, out = make()
    for i in range(3):
        f.add(i, (i + 1) * MS, (i + 1) * MS, 1)
    f.received(1, 10 * MS)
    assert out[0].seq == 1 and out[0].error is not None and "out of order" in out[0].error
    f.received(0, 11 * MS)
    f.received(2, 12 * MS)
    assert [s.ok for s in out] == [False, True, True]
    assert f.oldest() is None


def test_reply_for_unknown_seq_is_a_failure() -> None:
    f, out = make()
    s = f.received(99, 5 * MS)
    assert s is not None and not s.ok and "unknown seq" in (s.error or "")
    assert out == [s] and f.failed == 1


def test_expire_fails_only_messages_older_than_the_timeout_in_order() -> None:
    f, out = make(timeout_ms=100)
    f.add(0, 0 * MS + 1, 1, 1)
    f.add(1, 50 * MS, 50 * MS, 1)
    f.add(2, 90 * MS, 90 * MS, 1)
    assert f.next_deadline_ns() == 100 * MS + 1
    assert f.last_deadline_ns() == 190 * MS
    assert f.expire(now=149 * MS) == 1
    assert f.expire(now=150 * MS) == 1
    assert [s.seq for s in out] == [0, 1]
    assert all("timeout: no reply within 0.1 s" == s.error for s in out)
    assert out[0].latency_ns == 149 * MS - 1  # measured until the expiry, from intended
    assert out[0].received_ns == 0  # nothing was received
    assert len(f) == 1


def test_late_reply_after_timeout_is_counted_not_sampled_twice() -> None:
    f, out = make(timeout_ms=10)
    f.add(0, MS, MS, 1)
    f.expire(now=20 * MS)
    assert f.received(0, 30 * MS) is None
    assert len(out) == 1 and f.late == 1 and f.failed == 1
    # the same seq once more is now unknown (a duplicate reply)
    assert f.received(0, 31 * MS) is not None and len(out) == 2


def test_timeout_all_and_fail_all_settle_everything_with_a_reason() -> None:
    f, out = make()
    for i in range(3):
        f.add(i, i * MS + 1, i * MS + 1, 1)
    assert f.timeout_all(now=5 * MS) == 3
    assert [s.error for s in out] == ["timeout: no reply within 1 s"] * 3
    for i in range(3, 5):
        f.add(i, i * MS, i * MS, 1)
    assert f.fail_all("connection reset by peer", now=9 * MS) == 2
    assert [s.error for s in out[3:]] == ["lost: connection reset by peer"] * 2
    assert [s.seq for s in out] == [0, 1, 2, 3, 4]
    assert len(f) == 0 and f.fail_all("again") == 0
    assert f.next_deadline_ns() is None and f.last_deadline_ns() is None


def test_every_added_message_ends_as_exactly_one_sample() -> None:
    f, out = make(timeout_ms=5)
    for i in range(100):
        f.add(i, i * MS + 1, i * MS + 1, 1)
        if i % 3 == 0:
            f.received(i, i * MS + 2)
        if i % 10 == 9:
            f.expire(now=i * MS)
    f.fail_all("end")
    seqs = sorted(s.seq for s in out)
    assert seqs == list(range(100))


# --- Timer, Sample, helpers -----------------------------------------------------------------


def test_timer_measures_elapsed_monotonic_time() -> None:
    t = Timer()
    deadline = time.monotonic() + 0.02
    while time.monotonic() < deadline:
        pass
    s = t.sample("ws", "connect", 10, user_id=1, conn_id=2)
    assert 20 * MS <= s.latency_ns < 2_000 * MS
    assert s.start_ns == t.start_ns and s.seq == NO_SEQ and s.sent_ns == 0 and s.lag_ns == 0
    assert s.ok and s.latency_ms == s.latency_ns / 1e6
    failed = t.sample("ws", "connect", error="connection refused", seq=4)
    assert not failed.ok and failed.sent_ns == t.start_ns and failed.received_ns > 0


def test_first_difference_reports_length_and_first_differing_byte() -> None:
    assert first_difference(b"abc", b"abc") is None
    assert first_difference(b"abc", bytearray(b"abc")) is None
    assert first_difference(b"abc", b"ab") == "echo length 2 != sent 3"
    assert first_difference(b"\x00\x01\x02", b"\x00\xfe\x02") == (
        "echo mismatch at byte 1: sent 0x01, got 0xfe"
    )
    assert (
        first_difference(memoryview(b"xy"), b"xz") == "echo mismatch at byte 1: sent 0x79, got 0x7a"
    )


def test_epoch_mapping_matches_wall_clock() -> None:
    mapped = to_epoch_ns(measure.now_ns())
    assert abs(mapped - time.time_ns()) < 50 * MS
    assert abs(measure.epoch_ns() - time.time_ns()) < 50 * MS


def test_latency_us_is_clamped_to_the_histogram_range() -> None:
    def s(ns: int) -> Sample:
        return Sample("tcp", "msg", 0, ns)

    assert latency_us(s(0)) == measure.HDR_LOWEST_US
    assert latency_us(s(2_500_000)) == 2_500
    assert latency_us(s(10**15)) == measure.HDR_HIGHEST_US


def test_conn_ids_are_unique() -> None:
    ids = {measure.next_conn_id() for _ in range(100)}
    assert len(ids) == 100
