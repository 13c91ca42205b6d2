"""The measurement core: clocks, samples, paced schedules and in-flight matching.

This is the ONLY module that reads clocks. It knows nothing of Locust, gevent or sockets
(sans-I/O, like python-websockets' protocol core): transports call it with what happened and it
turns that into :class:`Sample` records handed to a *sink* (a plain callable). The Locust adapter
(``echoswarm.users.sink``) is one such sink; tests use a list's ``append``.

Timing rules (DESIGN.md, "Measurement rules"):

* every timestamp is ``time.monotonic_ns()`` on this host;
* a paced message's latency is ``received - intended`` (the schedule time), so a stalled server
  cannot hide behind a sender that also stalled (no coordinated omission); service time
  (``received - sent``) and sender lag (``sent - intended``) are recorded beside it;
* a reply that never comes, or comes wrong, is a failed sample with a clear message.

Wall-clock time appears once: an anchor taken at import maps monotonic readings to UTC epoch
nanoseconds for timelines that must line up across workers (:func:`to_epoch_ns`).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass


def _test_clock_skew_ns() -> int:
    """TESTING KNOB, never for real runs: ``ECHOSWARM_TEST_CLOCK_SKEW_MS=3000`` makes this
    process's wall clock read that far ahead (its epoch mapping and :func:`epoch_ns`), as a
    worker on a host with a wrong clock would. Tests use it to check that the master measures a
    worker's clock offset and aligns its timelines; latencies never change (monotonic only)."""
    text = os.environ.get("ECHOSWARM_TEST_CLOCK_SKEW_MS", "").strip()
    if not text:
        return 0
    try:
        return int(float(text) * 1_000_000)
    except ValueError:
        raise SystemExit(f"ECHOSWARM_TEST_CLOCK_SKEW_MS={text!r} is not a number") from None


_SKEW_NS = _test_clock_skew_ns()
# Monotonic → epoch offset, read once. Timelines use it; latencies never do.
_EPOCH_OFFSET_NS = time.time_ns() - time.monotonic_ns() + _SKEW_NS

now_ns: Callable[[], int] = time.monotonic_ns
"""The one clock: monotonic nanoseconds."""


def to_epoch_ns(mono_ns: int) -> int:
    """Map a :func:`now_ns` reading to Unix epoch nanoseconds (for cross-host timelines)."""
    return mono_ns + _EPOCH_OFFSET_NS


def epoch_ns() -> int:
    """Current time as Unix epoch nanoseconds (for run metadata and clock offsets, never for
    latencies)."""
    return time.time_ns() + _SKEW_NS


NO_SEQ = -1
_conn_ids = itertools.count(1)


def next_conn_id() -> int:
    """A process-unique id for a connection or stream (combined with the worker id downstream)."""
    return next(_conn_ids)


@dataclass(slots=True)
class Sample:
    """One measured operation: a message, a connect, a session, a whole call.

    ``latency_ns`` is what Locust and the HDR histograms see. For scheduled messages
    ``start_ns == intended_ns`` and ``latency_ns == received_ns - intended_ns``.
    """

    request_type: str  # transport: grpc | ws | tcp
    name: str  # operation and phase: "bidi msg", "connect", ...
    start_ns: int  # monotonic ns when the operation began (intended send for paced messages)
    latency_ns: int
    nbytes: int = 0
    error: str | None = None
    user_id: int = 0
    conn_id: int = 0  # stream / connection id
    seq: int = NO_SEQ
    intended_ns: int = 0  # 0 when not a scheduled message
    sent_ns: int = 0
    received_ns: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def lag_ns(self) -> int:
        """Sender lag: how late the message left versus its schedule (0 if not scheduled)."""
        return self.sent_ns - self.intended_ns if self.intended_ns and self.sent_ns else 0

    @property
    def service_ns(self) -> int:
        """Reply time minus actual send time (0 if unknown)."""
        return self.received_ns - self.sent_ns if self.received_ns and self.sent_ns else 0

    @property
    def latency_ms(self) -> float:
        return self.latency_ns / 1e6


Sink = Callable[[Sample], None]


class Timer:
    """Time one operation: ``t = Timer(); ...; sink(t.sample("tcp", "connect", ...))``."""

    __slots__ = ("start_ns",)

    def __init__(self) -> None:
        self.start_ns = now_ns()

    def elapsed_ns(self) -> int:
        return now_ns() - self.start_ns

    def sample(
        self,
        request_type: str,
        name: str,
        nbytes: int = 0,
        error: str | None = None,
        *,
        user_id: int = 0,
        conn_id: int = 0,
        seq: int = NO_SEQ,
    ) -> Sample:
        end = now_ns()
        return Sample(
            request_type,
            name,
            self.start_ns,
            end - self.start_ns,
            nbytes,
            error,
            user_id,
            conn_id,
            seq,
            0,
            self.start_ns if seq != NO_SEQ else 0,
            end if seq != NO_SEQ else 0,
        )


class Schedule:
    """The paced-send arithmetic: message *i* is due at ``t0 + i * interval``.

    ``interval_ns == 0`` means "as fast as possible": every message is due at once and lag is
    meaningless (it is then reported as 0 by :class:`InFlight`).
    """

    __slots__ = ("t0_ns", "interval_ns")

    def __init__(self, interval_ns: int, t0_ns: int | None = None) -> None:
        if interval_ns < 0:
            raise ValueError("interval must be >= 0")
        self.interval_ns = interval_ns
        self.t0_ns = now_ns() if t0_ns is None else t0_ns

    def due_ns(self, seq: int) -> int:
        return self.t0_ns + seq * self.interval_ns

    def wait_s(self, seq: int) -> float:
        """Seconds to sleep before sending ``seq`` (0 when already due or overdue)."""
        return max(0, self.due_ns(seq) - now_ns()) / 1e9

    def seqs(self, count: int | None = None) -> Iterator[int]:
        return iter(range(count)) if count is not None else itertools.count()


@dataclass(slots=True)
class Pending:
    """A message sent and not yet answered."""

    seq: int
    intended_ns: int
    sent_ns: int
    nbytes: int
    expect: object = None  # what the echo must equal (bytes, or a transport-specific object)


class InFlight:
    """Outstanding messages of one ordered stream, matched by seq; emits a Sample per message.

    Every message that is ``add``-ed ends as exactly one sample: answered (ok or mismatched),
    answered out of order, timed out (:meth:`expire`), or lost when the stream ends
    (:meth:`fail_all`). Nothing is silently dropped.
    """

    def __init__(
        self,
        sink: Sink,
        request_type: str,
        name: str,
        *,
        user_id: int = 0,
        conn_id: int = 0,
        timeout_ns: int = 10_000_000_000,
    ) -> None:
        self.sink = sink
        self.request_type = request_type
        self.name = name
        self.user_id = user_id
        self.conn_id = conn_id
        self.timeout_ns = timeout_ns
        self._pending: OrderedDict[int, Pending] = OrderedDict()
        # Seqs already settled as timeouts: their late replies are counted, not sampled twice.
        self._expired: set[int] = set()
        self.completed = 0
        self.failed = 0
        self.late = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self, seq: int, intended_ns: int, sent_ns: int, nbytes: int, expect: object = None
    ) -> None:
        self._pending[seq] = Pending(seq, intended_ns, sent_ns, nbytes, expect)

    def expected(self, seq: int) -> Pending | None:
        """The pending entry for ``seq`` (not removed), or None if unknown/already settled."""
        return self._pending.get(seq)

    def oldest(self) -> Pending | None:
        return next(iter(self._pending.values()), None)

    def received(
        self,
        seq: int,
        received_ns: int,
        error: str | None = None,
        echoed_intended_ns: int | None = None,
        echoed_sent_ns: int | None = None,
    ) -> Sample | None:
        """Settle ``seq`` with a reply that arrived at ``received_ns``.

        ``error`` is the transport's verdict on the content (e.g. "echo mismatch at byte 7").
        ``echoed_intended_ns``/``echoed_sent_ns``, when the reply carries the stamps back, must
        equal the ones recorded for that seq (checked here, in the same lookup).
        A reply for an unknown seq, or one that overtakes older outstanding messages, is a
        failure too: ordered transports must answer in order. Error texts carry no per-message
        numbers so Locust's failure table groups them (the seq is in the sample itself).
        A late reply for a message that already timed out returns None and only counts in
        :attr:`late` (its timeout sample stands); a reply that comes after the timeout before
        the message was expired is settled as that timeout (and counted in :attr:`late`).
        """
        pending = self._pending.pop(seq, None)
        if pending is None:
            if seq in self._expired:
                # Its failure (timeout) is already recorded; one message → one sample.
                self._expired.discard(seq)
                self.late += 1
                return None
            sample = Sample(
                self.request_type,
                self.name,
                received_ns,
                0,
                0,
                "reply for an unknown seq (never sent, already answered or timed out)",
                self.user_id,
                self.conn_id,
                seq,
                0,
                0,
                received_ns,
            )
            self.failed += 1
            self.sink(sample)
            return sample
        if received_ns - pending.intended_ns >= self.timeout_ns:
            # Later than the timeout: it failed as a timeout, whether or not the stream got to
            # expire it first (a paced stream expires overdue messages when it sends the next,
            # and a stalled link can hold that send up).
            self._settle(pending, received_ns, self._timeout_text(), ok=False)
            self.late += 1
            return None
        if (
            error is None
            and echoed_intended_ns is not None
            and (pending.intended_ns != echoed_intended_ns or pending.sent_ns != echoed_sent_ns)
        ):
            error = "echo mismatch in the header timestamps"
        if error is None and self._pending:
            first = next(iter(self._pending))
            if first < seq:
                error = "out of order: reply overtook an older outstanding message"
        return self._settle(pending, received_ns, error)

    def expire(self, now: int | None = None) -> int:
        """Fail every message outstanding for longer than the timeout; returns how many."""
        now = now_ns() if now is None else now
        n = 0
        while self._pending:
            seq, pending = next(iter(self._pending.items()))
            if now - pending.intended_ns < self.timeout_ns:
                break
            del self._pending[seq]
            self._expire_one(pending, now)
            n += 1
        return n

    def timeout_all(self, now: int | None = None) -> int:
        """Fail every outstanding message as a timeout now (the caller's wait ran out)."""
        now = now_ns() if now is None else now
        n = len(self._pending)
        while self._pending:
            _, pending = self._pending.popitem(last=False)
            self._expire_one(pending, now)
        return n

    def last_deadline_ns(self) -> int | None:
        """When the newest outstanding message times out (None if nothing is outstanding)."""
        if not self._pending:
            return None
        newest = next(reversed(self._pending.values()))
        return newest.intended_ns + self.timeout_ns

    def _expire_one(self, pending: Pending, now: int) -> None:
        if len(self._expired) > 10_000:  # bound memory on a stream that never answers
            self._expired.clear()
        self._expired.add(pending.seq)
        self._settle(pending, now, self._timeout_text(), ok=False)

    def _timeout_text(self) -> str:
        return f"timeout: no reply within {self.timeout_ns / 1e9:g} s"

    def next_deadline_ns(self) -> int | None:
        """When the oldest outstanding message times out (None if nothing is outstanding)."""
        oldest = self.oldest()
        return None if oldest is None else oldest.intended_ns + self.timeout_ns

    def fail_all(self, reason: str, now: int | None = None) -> int:
        """The stream ended: every outstanding message becomes a failed sample with ``reason``."""
        now = now_ns() if now is None else now
        n = len(self._pending)
        while self._pending:
            _, pending = self._pending.popitem(last=False)
            self._settle(pending, now, f"lost: {reason}", ok=False)
        return n

    def _settle(self, p: Pending, received_ns: int, error: str | None, ok: bool = True) -> Sample:
        sample = Sample(
            self.request_type,
            self.name,
            p.intended_ns,
            received_ns - p.intended_ns,
            p.nbytes,
            error,
            self.user_id,
            self.conn_id,
            p.seq,
            p.intended_ns,
            p.sent_ns,
            received_ns if ok else 0,
        )
        if error is None:
            self.completed += 1
        else:
            self.failed += 1
        self.sink(sample)
        return sample


def first_difference(
    sent: bytes | bytearray | memoryview, got: bytes | bytearray | memoryview
) -> str | None:
    """None if equal, else a short description of where an echo differs from what was sent."""
    if sent == got:
        return None
    if len(sent) != len(got):
        return f"echo length {len(got)} != sent {len(sent)}"
    for i, (a, b) in enumerate(zip(bytes(sent), bytes(got), strict=True)):
        if a != b:
            return f"echo mismatch at byte {i}: sent 0x{a:02x}, got 0x{b:02x}"
    return "echo mismatch"  # pragma: no cover - equal lengths and bytes means equal


# HDR histogram range shared by workers and the master (µs): 1 µs .. 60 s, 3 significant digits.
HDR_LOWEST_US = 1
HDR_HIGHEST_US = 60_000_000
HDR_SIGNIFICANT_DIGITS = 3


def latency_us(sample: Sample) -> int:
    """The sample's latency as a value an HDR histogram of our range can hold."""
    return min(max(sample.latency_ns // 1000, HDR_LOWEST_US), HDR_HIGHEST_US)
