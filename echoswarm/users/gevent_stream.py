"""The gevent driver of the stream core: TCP and WebSocket links run their streams here.

:class:`Stream` wraps one :class:`~echoswarm.streams.core.StreamCore` (which decides what is
due, matches replies, expires and drains) and does the waiting and the I/O on a *link*:

* **paced**: links that can send without blocking (TCP, binary WS) are driven by the process's
  scheduler (:mod:`echoswarm.users.scheduler`, one timerfd-woken timetable for every stream);
  others by a sender greenlet. The receiver (the user's own greenlet) hands every reply to the
  core. Latency is reply − intended, so a stalled server or a late sender shows up in every
  message due in the stall.
* **pingpong**: the closed loop in one greenlet (:meth:`Stream.run_pingpong`), with one
  watchdog greenlet per stream for the reply timeout.

Ending: at the stream's length the sender waits for outstanding replies up to their timeout,
fails the rest as timeouts and closes. When Locust stops the user (``GreenletExit`` in the
receiver), sending stops, replies already on their way are still collected for up to the
stop-drain time, and whatever is still outstanding becomes "lost: test stopped ..." — recorded
before the user's greenlet ends, hence before Locust's final stats. A broken connection fails
every outstanding message with its reason. Nothing here raises into Locust: transport errors
become samples and a reason string (``Stream.error``); the user backs off and reconnects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import gevent
from gevent.event import Event

from echoswarm.measure import InFlight, Sink, now_ns
from echoswarm.streams.core import StreamConfig, StreamCore
from echoswarm.streams.failures import describe
from echoswarm.users.scheduler import scheduler


class Link(Protocol):
    """A message connection as :class:`Stream` drives it (TCP and WebSocket implement it)."""

    nbytes: int

    def send(self, seq: int, intended_ns: int, sent_ns: int) -> None:
        """Stamp and send one message; raise on a broken connection."""

    def recv(self) -> tuple[int, int, int, str | None]:
        """Block for one reply: its (seq, intended, sent) stamps and a content error or None.
        Raises on a broken connection."""
        ...

    def close(self) -> None: ...


class NowaitLink(Link, Protocol):
    """A link that can send without blocking: paced streams on it share the process's
    scheduler instead of a sender greenlet each."""

    def send_nowait(self, seq: int, intended_ns: int, sent_ns: int) -> memoryview | None:
        """Stamp and send one message without blocking; return the bytes the transport did
        not take (None when all went), which :meth:`send_rest` must send next. Raise on a
        broken connection."""
        ...

    def send_rest(self, rest: memoryview) -> None:
        """Block until ``rest`` is sent (raise on a broken connection)."""


class Stream:
    """One ordered stream of echoed messages on a link; see the module docstring."""

    def __init__(self, cfg: StreamConfig, sink: Sink, *, user_id: int, conn_id: int, nbytes: int):
        self.cfg = cfg
        self.core = StreamCore(cfg, sink, user_id=user_id, conn_id=conn_id, nbytes=nbytes)
        self._drained = Event()
        self._replied = Event()
        self._helper: gevent.Greenlet | None = None  # sender, flush or drain greenlet
        self._link: NowaitLink

    @property
    def error(self) -> str | None:
        return self.core.error

    @property
    def sent(self) -> int:
        return self.core.sent

    @property
    def inflight(self) -> InFlight:
        return self.core.inflight

    # --------------------------------------------------------------- receiver side
    def on_reply(
        self, seq: int, intended_ns: int, sent_ns: int, received_ns: int, error: str | None
    ) -> None:
        if self.core.on_reply(seq, intended_ns, sent_ns, received_ns, error):
            self._drained.set()
        if self.cfg.pingpong:
            self._replied.set()

    def receive_loop(self, link: Link) -> None:
        """Receive on ``link`` until it is closed on purpose (or, when draining, nothing is
        outstanding). A connection error while not closing propagates."""
        core = self.core
        recv = link.recv
        on_reply = self.on_reply
        while True:
            if core.drained:
                return
            try:
                seq, intended, sent, error = recv()
            except Exception:
                if core.closing:
                    return
                raise
            on_reply(seq, intended, sent, now_ns(), error)

    def drain_on_stop(self, receive: Callable[[], None]) -> None:
        """Locust is stopping this user: collect replies in flight (bounded), then count the
        rest as lost. ``receive`` is the transport's receive loop (returns when drained)."""
        core = self.core
        core.stop()
        core.begin_drain()
        if core.outstanding:
            with gevent.Timeout(self.cfg.stop_drain_s, False):
                try:
                    receive()
                except Exception:  # the drain is best effort; what is missing is lost below
                    pass
        core.lost_on_stop(now_ns())

    # ------------------------------------------------------------- whole streams
    def run_paced(self, link: Link) -> None:
        """Sends on the schedule (the process's scheduler when the link can send without
        blocking, else a sender greenlet) + receiver in the calling greenlet, until the
        stream ends."""
        core = self.core
        core.start(now_ns())
        if hasattr(link, "send_nowait"):
            self._link = link  # type: ignore[assignment]
            scheduler().add(core.due_ns() or now_ns(), self._fire)  # message 0 at its phase
        else:
            self._helper = gevent.spawn(self._send_loop, link)
        try:
            self.receive_loop(link)
        except gevent.GreenletExit:
            self._stop_sending()
            self.drain_on_stop(lambda: self.receive_loop(link))
            raise
        except Exception as exc:
            core.fail(describe(exc))
        finally:
            self._stop_sending()
            core.closing = True
            link.close()
            core.finish(now_ns())

    def _stop_sending(self) -> None:
        """No more sends: the scheduler drops this stream at its next due time, and the
        sender / flush / drain greenlet, if any, is killed."""
        self.core.stop()
        helper = self._helper
        if helper is not None:
            self._helper = None
            helper.kill()

    # ---------------------------------------------------- paced on the scheduler
    def _fire(self) -> int | None:
        """Send the message that is due (called by the scheduler); the next due time, or None
        when this stream leaves the scheduler (stopped, ended, broken or flushing).

        Sending must not hold up the other streams, so a send the transport cannot take at
        once is finished by a greenlet of this stream (:meth:`_flush`), which gives the stream
        back to the scheduler afterwards; the messages that fell due meanwhile then go at once,
        each stamped when it really leaves.
        """
        core = self.core
        if core.stopped:
            return None
        due = core.due_ns()
        if due is None:
            self._helper = gevent.spawn(self._end_sending, None)
            return None
        if due > now_ns():
            return due  # woken early (never send before the message is due)
        try:
            seq, intended, sent = core.take(now_ns())  # stamped right before the bytes go
            rest = self._link.send_nowait(seq, intended, sent)
        except Exception as exc:  # the connection broke (or a sample sink failed)
            self._helper = gevent.spawn(self._end_sending, exc)
            return None
        if rest is not None:
            self._helper = gevent.spawn(self._flush, rest)
            return None
        due = core.due_ns()
        if due is None:
            self._helper = gevent.spawn(self._end_sending, None)
        return due

    def _flush(self, rest: memoryview) -> None:
        """Finish a send the transport could not take at once, then rejoin the scheduler."""
        try:
            self._link.send_rest(rest)
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            self._end_sending(exc)
            return
        due = self.core.due_ns()
        if due is None:
            self._end_sending(None)
        elif not self.core.stopped:
            self._helper = None
            scheduler().add(due, self._fire)

    def _end_sending(self, exc: Exception | None) -> None:
        """The schedule ended (``exc`` None: drain the replies) or a send failed; either way
        close the link, which ends the receiver."""
        if exc is None:
            self._drain_after_send()
        else:
            self.core.fail(describe(exc))
        self.core.closing = True
        self._link.close()

    def _drain_after_send(self) -> None:
        """The sender is done: wait for outstanding replies up to their timeout (the core
        fails the rest as timeouts). Returns early if a stop is requested."""
        core = self.core
        core.begin_drain()
        while not core.drained and not core.stopped:
            wait_ns = core.drain_wait_ns(now_ns())
            if wait_ns <= 0:
                break
            self._drained.wait(wait_ns / 1e9)

    def _send_loop(self, link: Link) -> None:
        """A sender greenlet for links that cannot send without blocking."""
        core = self.core
        try:
            send = link.send
            while (due := core.due_ns()) is not None:
                delay = due - now_ns()
                if delay > 0:
                    gevent.sleep(delay / 1e9)
                    if core.stopped:
                        break
                send(*core.take(now_ns()))
            else:
                self._drain_after_send()
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            core.fail(describe(exc))
        # Wake the receiver: the stream is over either way.
        core.closing = True
        link.close()

    def run_pingpong(self, link: Link) -> None:
        """The closed loop in one greenlet: send, wait for the reply (or time out), repeat.

        The reply timeout is one watchdog greenlet per stream, not a socket timeout: a socket
        timeout arms and cancels a timer on every blocking read, i.e. on every message.
        """
        core = self.core
        core.start(now_ns())
        send = link.send
        recv = link.recv
        on_reply = self.on_reply
        watchdog = gevent.spawn(self._watchdog, link)
        try:
            while core.due_ns(now_ns()) is not None:
                send(*core.take(now_ns()))
                rseq, intended, rsent, error = recv()
                on_reply(rseq, intended, rsent, now_ns(), error)
        except gevent.GreenletExit:
            watchdog.kill()
            self.drain_on_stop(lambda: self.receive_loop(link))
            raise
        except Exception as exc:
            if not core.closing:  # else the watchdog closed it and recorded why
                core.fail(describe(exc))
        finally:
            watchdog.kill()
            core.closing = True
            link.close()
            core.finish(now_ns())

    def _watchdog(self, link: Link) -> None:
        """Fail the outstanding message once it is older than the timeout and end the stream
        (the connection is then out of step); wakes about once per timeout period."""
        core = self.core
        idle_s = self.cfg.timeout_s
        while True:
            deadline = core.next_deadline_ns()
            now = now_ns()
            if deadline is None:
                gevent.sleep(idle_s)
            elif now < deadline:
                gevent.sleep((deadline - now) / 1e9)
            else:
                core.expire(now)
                core.fail("timeout")
                core.closing = True
                link.close()
                return
