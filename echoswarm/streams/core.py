"""The stream logic every transport shares, free of I/O: schedule, in-flight matching, expiry,
drain and the ping-pong decisions.

One :class:`StreamCore` is one ordered sequence of echoed messages on one connection (a TCP
socket, a WebSocket session, a gRPC bidi call). It decides *what* happens; a driver decides
*when* and does the I/O. Two drivers use it: the gevent one for TCP and WebSocket links
(:mod:`echoswarm.users.gevent_stream`) and the asyncio one for gRPC
(:mod:`echoswarm.streams.grpc_calls`). Like python-websockets' ``protocol.py`` it never blocks,
sleeps or touches a socket, so it is tested with plain pytest and an injected clock.

The rules it keeps (DESIGN.md, "Measurement rules"):

* **paced**: message *i* is due at ``t0 + i * interval`` (:class:`~echoswarm.measure.Schedule`
  is the only place that multiplies it out), ``t0`` a phase after the stream's start
  (:meth:`StreamCore.start`); latency = reply − intended, so a late sender or a stalled server
  shows in every message due meanwhile. ``sent_ns`` is taken by the driver right
  before the bytes leave (:meth:`StreamCore.take`).
* **pingpong**: the closed loop; a message is due as soon as the previous one is answered, and
  its intended time is its send time.
* Ending: at the stream's length (seconds or messages) the driver stops sending and drains:
  replies are awaited up to their timeout (:meth:`StreamCore.drain_wait_ns`), the rest fail as
  timeouts. A stop (Locust stopping the user) ends sending at once; replies already on their way
  are collected for up to :attr:`StreamConfig.stop_drain_s`, the rest become
  "lost: test stopped ...". A broken connection fails every outstanding message with its reason
  (:meth:`StreamCore.finish`). Every message sent ends as exactly one sample.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from echoswarm.measure import InFlight, Schedule, Sink, first_difference
from echoswarm.wire import read_stamps

STOP_DRAIN_S = 2.0
"""At most this long (and never longer than the reply timeout) a stopping stream waits for
replies already in flight before counting them as lost."""

LOST_ON_STOP = "test stopped before the reply arrived"


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """How one stream runs (built from the Locust options by the user)."""

    request_type: str
    name: str  # the per-message row, e.g. "msg" or "bidi msg"
    interval_ns: int
    pingpong: bool
    max_messages: int | None  # None = no limit
    duration_ns: int | None  # None = until stopped
    timeout_ns: int
    spread: bool = True  # paced: the first message at a phase within the interval (see start)

    @property
    def timeout_s(self) -> float:
        return self.timeout_ns / 1e9

    @property
    def stop_drain_s(self) -> float:
        return min(STOP_DRAIN_S, self.timeout_s)

    def as_wire(self) -> list[Any]:
        """The fields as a plain list (crosses to the gRPC driver process)."""
        return [
            self.request_type,
            self.name,
            self.interval_ns,
            self.pingpong,
            self.max_messages,
            self.duration_ns,
            self.timeout_ns,
            self.spread,
        ]

    @classmethod
    def from_wire(cls, fields: list[Any]) -> StreamConfig:
        rt, name, interval, pingpong, limit, duration, timeout, spread = fields
        return cls(
            str(rt), str(name), int(interval), bool(pingpong), limit, duration, int(timeout),
            bool(spread),
        )  # fmt: skip


def stream_config(opts: Any, request_type: str, name: str) -> StreamConfig:
    """A :class:`StreamConfig` from echoswarm's Locust options (``echoswarm.users.options``)."""
    return StreamConfig(
        request_type=request_type,
        name=name,
        interval_ns=int(opts.interval_ms * 1_000_000),
        pingpong=opts.mode == "pingpong",
        max_messages=opts.stream_messages or None,
        duration_ns=int(opts.stream_seconds * 1e9) or None,
        timeout_ns=int(opts.reply_timeout_s * 1e9),
        spread=getattr(opts, "phases", "spread") == "spread",
    )


_GOLDEN = 0.6180339887498949
_phases = itertools.count()


def next_phase_ns(interval_ns: int) -> int:
    """Where in the interval the next paced stream of this process starts: a low-discrepancy
    sequence (fractions of the golden ratio), so any number of streams started together — Locust
    spawns a whole second's users at once — are spread evenly instead of sending in lockstep."""
    return int(((next(_phases) * _GOLDEN) % 1.0) * interval_ns)


class StreamCore:
    """One ordered stream's decisions; see the module docstring.

    A driver's paced loop is::

        core.start(now)
        while (due := core.due_ns()) is not None:
            wait until due
            seq, intended, sent = core.take(now())     # then send those stamps
        core.begin_drain()  # wait up to core.drain_wait_ns(now()) for core.drained

    and its receiver calls :meth:`on_reply` for every reply.
    """

    __slots__ = (
        "cfg",
        "nbytes",
        "inflight",
        "schedule",
        "error",
        "sent",
        "next_seq",
        "end_ns",
        "stopped",
        "draining",
        "closing",
    )

    def __init__(self, cfg: StreamConfig, sink: Sink, *, user_id: int, conn_id: int, nbytes: int):
        self.cfg = cfg
        self.nbytes = nbytes
        self.inflight = InFlight(
            sink,
            cfg.request_type,
            cfg.name,
            user_id=user_id,
            conn_id=conn_id,
            timeout_ns=cfg.timeout_ns,
        )
        self.schedule = Schedule(0 if cfg.pingpong else cfg.interval_ns, 0)
        self.error: str | None = None  # why the stream broke (None = ended cleanly)
        self.sent = 0
        self.next_seq = 0
        self.end_ns: int | None = None
        self.stopped = False  # no more sends (a stop was requested)
        self.draining = False  # no more sends: the receiver may end once nothing is outstanding
        self.closing = False  # the driver closes the link on purpose: its next error is not one

    # ------------------------------------------------------------------- sending
    def start(self, now: int, phase_ns: int | None = None) -> None:
        """The stream begins: message 0 is due at ``now + phase``. Paced streams get a phase
        within the interval (:func:`next_phase_ns`; 0 with ``--phases aligned``, and for
        ping-pong) so streams started together do not send in lockstep; its length counts from
        ``now``."""
        cfg = self.cfg
        if phase_ns is None:
            spread = cfg.spread and not cfg.pingpong and cfg.interval_ns > 0
            phase_ns = next_phase_ns(cfg.interval_ns) if spread else 0
        self.schedule.t0_ns = now + phase_ns
        self.end_ns = now + cfg.duration_ns if cfg.duration_ns else None

    def due_ns(self, now: int | None = None) -> int | None:
        """When the next message is due, or None once the stream sends no more (stopped, at
        its length or message limit, or — ping-pong — broken). Ping-pong: ``now`` (required)
        when nothing is outstanding; the caller waits for the reply otherwise."""
        if self.stopped or self.error is not None:
            return None
        seq = self.next_seq
        limit = self.cfg.max_messages
        if limit is not None and seq >= limit:
            return None
        due = now if self.cfg.pingpong and now is not None else self.schedule.due_ns(seq)
        if self.end_ns is not None and due >= self.end_ns:
            return None
        return due

    def take(self, sent_ns: int) -> tuple[int, int, int]:
        """The next message leaves at ``sent_ns``: expire overdue replies, put it in flight;
        returns its stamps ``(seq, intended_ns, sent_ns)``."""
        seq = self.next_seq
        intended = sent_ns if self.cfg.pingpong else self.schedule.due_ns(seq)
        inflight = self.inflight
        inflight.expire(sent_ns)
        inflight.add(seq, intended, sent_ns, self.nbytes)
        self.next_seq = seq + 1
        self.sent += 1
        return seq, intended, sent_ns

    def stop(self) -> None:
        """Send no more (Locust is stopping the user, or the driver gave up)."""
        self.stopped = True

    def fail(self, reason: str) -> None:
        """The stream broke (the first reason is kept)."""
        if self.error is None:
            self.error = reason

    # ----------------------------------------------------------------- receiving
    def on_reply(
        self, seq: int, intended_ns: int, sent_ns: int, received_ns: int, error: str | None
    ) -> bool:
        """Settle one reply (its echoed stamps must equal the ones sent for that seq); True
        when the stream is drained (draining and nothing outstanding)."""
        inflight = self.inflight
        inflight.received(seq, received_ns, error, intended_ns, sent_ns)
        return self.draining and not inflight

    @property
    def outstanding(self) -> int:
        return len(self.inflight)

    @property
    def drained(self) -> bool:
        return self.draining and not self.inflight

    def expire(self, now: int) -> int:
        """Fail every message older than the timeout; how many."""
        return self.inflight.expire(now)

    def next_deadline_ns(self) -> int | None:
        """When the oldest outstanding message times out (None: nothing outstanding)."""
        return self.inflight.next_deadline_ns()

    def pingpong_timeout(self, now: int) -> None:
        """A ping-pong reply did not come within the timeout: fail it, end the stream."""
        self.inflight.timeout_all(now)
        self.fail("timeout")

    # ------------------------------------------------------------------- ending
    def begin_drain(self) -> None:
        """No more sends; from now the receiver may stop once nothing is outstanding."""
        self.draining = True

    def drain_wait_ns(self, now: int) -> int:
        """After the last send: how much longer to wait for the outstanding replies (0 when
        none is outstanding). When the newest one's timeout has passed, every outstanding
        message is failed as a timeout and 0 is returned."""
        deadline = self.inflight.last_deadline_ns()
        if deadline is None:
            return 0
        wait = deadline - now
        if wait <= 0:
            self.inflight.timeout_all(now)
            return 0
        return wait

    def lost_on_stop(self, now: int) -> int:
        """After the bounded drain of a stop: what is still outstanding is lost."""
        return self.inflight.fail_all(LOST_ON_STOP, now)

    def finish(self, now: int) -> int:
        """The stream ended: account for anything still outstanding (idempotent)."""
        if self.inflight:
            return self.inflight.fail_all(
                self.error or "stream closed before the reply arrived", now
            )
        return 0


def check_echo(data: bytes | bytearray, expect: bytearray) -> tuple[int, int, int, str | None]:
    """Check the echo of a stamped frame: (seq, intended, sent, content error or None).

    ``expect`` is the frame as sent with any stamps; the echo's own stamps (checked against
    what was sent for that seq by :meth:`StreamCore.on_reply`) are copied into it, so one buffer
    comparison covers every other byte.
    """
    seq, intended, sent = read_stamps(data)
    expect[8:32] = data[8:32]
    if data == expect:
        return seq, intended, sent, None
    return seq, intended, sent, first_difference(expect, data)


class Backoff:
    """Exponential reconnect delay: 0.1 s doubling to a cap, reset after a good connection.
    (The arithmetic only; each driver sleeps its own way.)"""

    __slots__ = ("first_s", "cap_s", "delay_s")

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.delay_s = first_s

    def next_delay(self) -> float:
        delay = self.delay_s
        self.delay_s = min(self.cap_s, self.delay_s * 2)
        return delay

    def reset(self) -> None:
        self.delay_s = self.first_s
