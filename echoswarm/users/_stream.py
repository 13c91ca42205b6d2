"""The stream machinery every transport shares: pacing, reply matching, drain, stop, backoff.

One :class:`Stream` is one ordered sequence of echoed messages on one connection (a TCP socket,
a WebSocket session, a gRPC bidi call). It owns an :class:`~echoswarm.measure.InFlight` and
turns what the transport reports into samples:

* **paced**: message *i* is due at ``t0 + i * interval``. Links that can send without blocking
  (TCP, binary WS) are driven by the process's scheduler (:meth:`Stream._fire`); others by a
  sender greenlet or gRPC's request iterator over :meth:`Stream.ticks`. The receiver (the
  user's own greenlet) hands every reply to :meth:`Stream.on_reply`. Latency is reply −
  intended, so a stalled server or a late sender shows up in every message due in the stall.
* **pingpong**: the closed loop; TCP/WS run it in one greenlet (:meth:`Stream.run_pingpong`),
  gRPC through :meth:`Stream.ticks` gated on each reply.

Ending: when the stream's length (seconds/messages) is reached the sender waits for the
outstanding replies up to their timeout (:meth:`Stream.drain_after_send`), fails the rest as
timeouts and closes. When Locust stops the user (``GreenletExit`` in the receiver), the sender
stops, replies already on their way are still collected for up to :data:`STOP_DRAIN_S`
(:meth:`Stream.drain_on_stop`), and whatever is still outstanding becomes a failed sample
"lost: test stopped ..." — recorded before the user's greenlet ends, hence before Locust's final
stats. A broken connection fails every outstanding message with its reason.

Nothing here raises into Locust: transport errors become samples and a reason string; the user
module waits on a :class:`Backoff` and reconnects.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
from gevent.event import Event

from echoswarm.measure import InFlight, Sink, first_difference, now_ns
from echoswarm.users._scheduler import scheduler
from echoswarm.wire import read_stamps

STOP_DRAIN_S = 2.0
"""At most this long (and never longer than the reply timeout) a stopping stream waits for
replies already in flight before counting them as lost."""


class ConnectionLost(Exception):
    """The peer closed, reset or garbled the connection; the message is the sample's error."""


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

    @property
    def timeout_s(self) -> float:
        return self.timeout_ns / 1e9

    @property
    def stop_drain_s(self) -> float:
        return min(STOP_DRAIN_S, self.timeout_s)


def stream_config(opts: Any, request_type: str, name: str) -> StreamConfig:
    """A :class:`StreamConfig` from echoswarm's Locust options (see ``options.py``)."""
    return StreamConfig(
        request_type=request_type,
        name=name,
        interval_ns=int(opts.interval_ms * 1_000_000),
        pingpong=opts.mode == "pingpong",
        max_messages=opts.stream_messages or None,
        duration_ns=int(opts.stream_seconds * 1e9) or None,
        timeout_ns=int(opts.reply_timeout_s * 1e9),
    )


class Link(Protocol):
    """A message connection as :class:`Stream` drives it (TCP and WebSocket implement it)."""

    nbytes: int

    def send(self, seq: int, intended_ns: int, sent_ns: int) -> None:
        """Stamp and send one message; raise on a broken connection."""

    def recv(self) -> tuple[int, int, int, str | None]:
        """Block for one reply: its (seq, intended, sent) stamps and a content error or None.

        Raises ``socket.timeout`` when the link's timeout passes, any other exception when the
        connection is broken.
        """
        ...

    def set_timeout(self, seconds: float | None) -> None: ...

    def close(self) -> None: ...


class NowaitLink(Link, Protocol):
    """A link that can send without blocking: paced streams on it share the process's
    scheduler (:mod:`echoswarm.users._scheduler`) instead of a sender greenlet each."""

    def send_nowait(self, seq: int, intended_ns: int, sent_ns: int) -> memoryview | None:
        """Stamp and send one message without blocking; return the bytes the transport did
        not take (None when all went), which :meth:`send_rest` must send next. Raise on a
        broken connection."""
        ...

    def send_rest(self, rest: memoryview) -> None:
        """Block until ``rest`` is sent (raise on a broken connection)."""


class Stream:
    """One ordered stream of echoed messages; see the module docstring."""

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
        self.error: str | None = None  # why the stream broke (None = ended cleanly)
        self.closing = False  # we closed it on purpose: the receiver's next error is not one
        self.sent = 0
        self._stop = Event()
        self._drained = Event()
        self._replied = Event()
        self._draining = False
        self._helper: gevent.Greenlet | None = None  # sender, flush or drain greenlet
        self._link: NowaitLink
        self._t0 = 0
        self._end: int | None = None
        self._next_seq = 0

    # ----------------------------------------------------------------- sender side
    def ticks(self) -> Iterator[tuple[int, int, int]]:
        """Yield ``(seq, intended_ns, sent_ns)`` as each message falls due (already in flight).

        Paced: on the schedule, expiring timed-out messages at every tick. Pingpong: the next
        one after the previous reply (or its timeout, which ends the stream). Ends at the
        stream's length or when :meth:`request_stop` is called.
        """
        cfg = self.cfg
        inflight = self.inflight
        interval = cfg.interval_ns
        t0 = now_ns()
        end = t0 + cfg.duration_ns if cfg.duration_ns else None
        limit = cfg.max_messages
        stop = self._stop
        sleep = gevent.sleep
        seq = 0
        while limit is None or seq < limit:
            if cfg.pingpong:
                due = now_ns()
            else:
                due = t0 + seq * interval
                delay = due - now_ns()
                if delay > 0:
                    # A plain timer, not stop.wait(): that allocates a Timeout per message.
                    # A stop is noticed at the next due time at the latest (TCP/WS kill the
                    # sender outright; gRPC's request iterator cannot be killed).
                    sleep(delay / 1e9)
            if stop.is_set() or (end is not None and due >= end):
                return
            sent = now_ns()
            if inflight._pending:
                inflight.expire(sent)
            inflight.add(seq, due, sent, self.nbytes)
            self.sent += 1
            if cfg.pingpong:
                self._replied.clear()
            yield seq, due, sent
            if cfg.pingpong and not self._replied.wait(cfg.timeout_s):
                if not stop.is_set():
                    inflight.timeout_all()
                    self.error = self.error or "timeout"
                return
            seq += 1

    def request_stop(self) -> None:
        """Stop sending (the sender leaves :meth:`ticks` at once)."""
        self._stop.set()

    @property
    def draining(self) -> bool:
        """No more sends: the receiver may return once nothing is outstanding."""
        return self._draining

    def drain_after_send(self) -> bool:
        """The sender is done: wait for outstanding replies up to their timeout, expire the rest.

        Runs in the sender; returns early if a stop is requested (the receiver then drains).
        False if some replies had to be failed as timeouts.
        """
        inflight = self.inflight
        self._draining = True
        if not inflight:
            self._drained.set()
        while inflight and not self._stop.is_set():
            deadline = inflight.last_deadline_ns()
            if deadline is None:
                break
            wait_ns = deadline - now_ns()
            if wait_ns <= 0:
                inflight.timeout_all()
                return False
            self._drained.wait(wait_ns / 1e9)
        return True

    # --------------------------------------------------------------- receiver side
    def on_reply(
        self, seq: int, intended_ns: int, sent_ns: int, received_ns: int, error: str | None
    ) -> None:
        """Settle one reply; the echoed stamps must equal the ones sent for that seq."""
        inflight = self.inflight
        inflight.received(seq, received_ns, error, intended_ns, sent_ns)
        if self.cfg.pingpong:
            self._replied.set()
        if self._draining and not inflight:
            self._drained.set()

    def receive_loop(self, link: Link) -> None:
        """Receive on ``link`` until it is closed on purpose (or, when draining, nothing is
        outstanding). A connection error while not closing propagates."""
        inflight = self.inflight
        recv = link.recv
        on_reply = self.on_reply
        while True:
            if self._draining and not inflight:
                return
            try:
                seq, intended, sent, error = recv()
            except Exception:
                if self.closing:
                    return
                raise
            on_reply(seq, intended, sent, now_ns(), error)

    def drain_on_stop(self, receive: Callable[[], None]) -> None:
        """Locust is stopping this user: collect replies in flight (bounded), then count the
        rest as lost. ``receive`` is the transport's receive loop (returns when drained)."""
        self.request_stop()
        self._draining = True
        if self.inflight:
            with gevent.Timeout(self.cfg.stop_drain_s, False):
                try:
                    receive()
                except Exception:  # the drain is best effort; what is missing is lost below
                    pass
        self.inflight.fail_all("test stopped before the reply arrived")

    def finish(self) -> None:
        """Account for anything still outstanding when the stream ends (idempotent)."""
        if self.inflight:
            self.inflight.fail_all(self.error or "stream closed before the reply arrived")

    # ------------------------------------------------------------- whole streams
    def run_paced(self, link: Link) -> None:
        """Sends on the schedule (the process's scheduler when the link can send without
        blocking, else a sender greenlet) + receiver in the calling greenlet, until the
        stream ends."""
        if hasattr(link, "send_nowait"):
            self._start_scheduled(link)  # type: ignore[arg-type]
        else:
            self._helper = gevent.spawn(self._send_loop, link)
        try:
            self.receive_loop(link)
        except gevent.GreenletExit:
            self._stop_sending()
            self.drain_on_stop(lambda: self.receive_loop(link))
            raise
        except Exception as exc:
            self.error = self.error or describe(exc)
        finally:
            self._stop_sending()
            self.closing = True
            link.close()
            self.finish()

    def _stop_sending(self) -> None:
        """No more sends: the scheduler drops this stream at its next due time, and the
        sender / flush / drain greenlet, if any, is killed."""
        self._stop.set()
        helper = self._helper
        if helper is not None:
            self._helper = None
            helper.kill()

    # ---------------------------------------------------- paced on the scheduler
    def _start_scheduled(self, link: NowaitLink) -> None:
        """Register with the process's scheduler; message 0 is due now.

        The scheduler calls :meth:`_fire` at each due time. Sending must not hold up the other
        streams, so a send the transport cannot take at once is finished by a greenlet of this
        stream (:meth:`_flush`), which gives the stream back to the scheduler afterwards; the
        messages that fell due meanwhile then go at once, each stamped when it really leaves.
        """
        cfg = self.cfg
        self._link = link
        self._t0 = t0 = now_ns()
        self._end = t0 + cfg.duration_ns if cfg.duration_ns else None
        self._next_seq = 0
        scheduler().add(t0, self._fire)

    def _fire(self) -> int | None:
        """Send the message that is due (called by the scheduler); the next due time, or None
        when this stream leaves the scheduler (stopped, ended, broken or flushing)."""
        if self._stop.is_set():
            return None
        cfg = self.cfg
        seq = self._next_seq
        due = self._t0 + seq * cfg.interval_ns
        if self._end is not None and due >= self._end:
            self._helper = gevent.spawn(self._end_sending, None)
            return None
        inflight = self.inflight
        try:
            if inflight._pending:
                inflight.expire(now_ns())
            sent = now_ns()  # stamped right before the bytes go to the transport
            inflight.add(seq, due, sent, self.nbytes)
            self.sent += 1
            self._next_seq = seq = seq + 1
            rest = self._link.send_nowait(seq - 1, due, sent)
        except Exception as exc:  # the connection broke (or a sample sink failed)
            self._helper = gevent.spawn(self._end_sending, exc)
            return None
        if rest is not None:
            self._helper = gevent.spawn(self._flush, rest)
            return None
        if cfg.max_messages is not None and seq >= cfg.max_messages:
            self._helper = gevent.spawn(self._end_sending, None)
            return None
        return self._t0 + seq * cfg.interval_ns

    def _flush(self, rest: memoryview) -> None:
        """Finish a send the transport could not take at once, then rejoin the scheduler."""
        try:
            self._link.send_rest(rest)
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            self._end_sending(exc)
            return
        cfg = self.cfg
        if cfg.max_messages is not None and self._next_seq >= cfg.max_messages:
            self._end_sending(None)
        elif not self._stop.is_set():
            self._helper = None
            scheduler().add(self._t0 + self._next_seq * cfg.interval_ns, self._fire)

    def _end_sending(self, exc: Exception | None) -> None:
        """The schedule ended (``exc`` None: drain the replies) or a send failed; either way
        close the link, which ends the receiver."""
        if exc is None:
            self.drain_after_send()
        else:
            self.error = self.error or describe(exc)
        self.closing = True
        self._link.close()

    def _send_loop(self, link: Link) -> None:
        try:
            send = link.send
            for seq, intended, sent in self.ticks():
                send(seq, intended, sent)
            self.drain_after_send()
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            self.error = self.error or describe(exc)
        # Wake the receiver: the stream is over either way.
        self.closing = True
        link.close()

    def run_pingpong(self, link: Link) -> None:
        """The closed loop in one greenlet: send, wait for the reply (or time out), repeat.

        The reply timeout is one watchdog greenlet per stream, not a socket timeout: a socket
        timeout arms and cancels a timer on every blocking read, i.e. on every message.
        """
        cfg = self.cfg
        inflight = self.inflight
        limit = cfg.max_messages
        end = now_ns() + cfg.duration_ns if cfg.duration_ns else None
        send = link.send
        recv = link.recv
        on_reply = self.on_reply
        watchdog = gevent.spawn(self._watchdog, link)
        seq = 0
        try:
            while limit is None or seq < limit:
                sent = now_ns()
                if end is not None and sent >= end:
                    break
                inflight.add(seq, sent, sent, self.nbytes)
                self.sent += 1
                send(seq, sent, sent)
                rseq, intended, rsent, error = recv()
                on_reply(rseq, intended, rsent, now_ns(), error)
                seq += 1
        except gevent.GreenletExit:
            watchdog.kill()
            self.drain_on_stop(lambda: self.receive_loop(link))
            raise
        except Exception as exc:
            if not self.closing:  # else the watchdog closed it and recorded why
                self.error = self.error or describe(exc)
        finally:
            watchdog.kill()
            self.closing = True
            link.close()
            self.finish()

    def _watchdog(self, link: Link) -> None:
        """Fail the outstanding message once it is older than the timeout and end the stream
        (the connection is then out of step); wakes about once per timeout period."""
        inflight = self.inflight
        idle_s = self.cfg.timeout_s
        while True:
            deadline = inflight.next_deadline_ns()
            now = now_ns()
            if deadline is None:
                gevent.sleep(idle_s)
            elif now < deadline:
                gevent.sleep((deadline - now) / 1e9)
            else:
                inflight.expire(now)
                self.error = self.error or "timeout"
                self.closing = True
                link.close()
                return


def check_echo(data: bytes | bytearray, expect: bytearray) -> tuple[int, int, int, str | None]:
    """Check the echo of a stamped frame: (seq, intended, sent, content error or None).

    ``expect`` is the frame as sent with any stamps; the echo's own stamps (checked against
    what was sent for that seq by :meth:`Stream.on_reply`) are copied into it, so one buffer
    comparison covers every other byte.
    """
    seq, intended, sent = read_stamps(data)
    expect[8:32] = data[8:32]
    if data == expect:
        return seq, intended, sent, None
    return seq, intended, sent, first_difference(expect, data)


class Backoff:
    """Exponential reconnect delay: 0.1 s doubling to a cap, reset after a good connection."""

    __slots__ = ("first_s", "cap_s", "delay_s")

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.delay_s = first_s

    def next_delay(self) -> float:
        delay = self.delay_s
        self.delay_s = min(self.cap_s, self.delay_s * 2)
        return delay

    def wait(self) -> None:
        gevent.sleep(self.next_delay())

    def reset(self) -> None:
        self.delay_s = self.first_s


_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by peer",
    errno.EPIPE: "connection closed by peer (broken pipe)",
    errno.ECONNABORTED: "connection aborted",
    errno.ETIMEDOUT: "timeout",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
}


def describe(exc: BaseException) -> str:
    """A short, stable failure text for an exception (no addresses or counters in it, so
    Locust's failure table groups equal causes)."""
    if isinstance(exc, ConnectionLost):
        return str(exc)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve host"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_TEXT:
        return _ERRNO_TEXT[exc.errno]
    if isinstance(exc, OSError):
        return f"socket error: {exc.strerror or exc}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
