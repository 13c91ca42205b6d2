"""The abstract Locust user every echoswarm transport builds on.

It holds what a user needs whatever the transport — its options, its sample sink, its id, its
reconnect :class:`~echoswarm.streams.core.Backoff` — and the two connection patterns the
message transports (TCP, WebSocket) share; a transport supplies :meth:`EchoUser.open_link` and
its failure wording :meth:`EchoUser.describe_error`:

* :meth:`EchoUser.stream_once` — one connection carrying a paced or ping-pong stream until it
  ends (rows ``connect`` and ``msg``);
* :meth:`EchoUser.short_connection` — a short-lived connection: connect, a fixed number of round
  trips, close (rows ``connect``, one per-message row per round trip, and ``session`` from
  connect to close). ``--connections-per-user`` of them, then the user stops.

A failed connect is a ``connect`` failure sample followed by a backoff wait; a stream that broke
is backed off the same way before the next task reconnects. Nothing raises into Locust except
``StopUser`` (sanctioned) and the ``GreenletExit`` of a stop.
"""

from __future__ import annotations

from dataclasses import replace

import gevent
import locust  # noqa: F401  (gevent monkey-patching first)
from locust import User, constant
from locust.exception import StopUser

from echoswarm.measure import Timer, next_conn_id
from echoswarm.streams.core import Backoff, stream_config
from echoswarm.streams.failures import describe
from echoswarm.users import options, tuning  # noqa: F401  (tuning: registers its listeners)
from echoswarm.users.gevent_stream import Link, Stream
from echoswarm.users.sink import LocustSink, next_user_id


class EchoUser(User):
    """Abstract base of the echoswarm users (``transport`` names the request_type)."""

    abstract = True
    transport = ""
    name_prefix = ""  # a scenario's variant tag: "serial " gives rows "serial msg", ...
    wait_time = constant(0)

    def on_start(self) -> None:
        self.opts = options.user_options(self.environment)
        self.sink = LocustSink(self.environment)
        self.user_id = next_user_id()
        self.backoff = Backoff()
        self.connections = 0

    # ------------------------------------------------------- supplied per transport
    def open_link(self) -> Link:
        """Connect and return the link (raise on failure; the caller records it)."""
        raise NotImplementedError

    def describe_error(self, exc: BaseException) -> str:
        return describe(exc)

    # ----------------------------------------------------------------- shared
    def connect(self) -> tuple[Link, int, Timer] | None:
        """Open one connection (row ``connect``): (link, conn_id, timer started before the
        connect), or None after a failure (recorded, backed off)."""
        conn_id = next_conn_id()
        timer = Timer()
        name = self.name_prefix + "connect"
        try:
            link = self.open_link()
        except Exception as exc:
            error = self.describe_error(exc)
            self.sink(
                timer.sample(self.transport, name, 0, error, user_id=self.user_id, conn_id=conn_id)
            )
            self.backoff_wait()
            return None
        self.sink(timer.sample(self.transport, name, user_id=self.user_id, conn_id=conn_id))
        return link, conn_id, timer

    def stream_once(self) -> None:
        """One connection carrying a paced or ping-pong stream until it ends."""
        opened = self.connect()
        if opened is None:
            return
        link, conn_id, _ = opened
        cfg = stream_config(self.opts, self.transport, self.name_prefix + "msg")
        stream = Stream(cfg, self.sink, user_id=self.user_id, conn_id=conn_id, nbytes=link.nbytes)
        if cfg.pingpong:
            stream.run_pingpong(link)
        else:
            stream.run_paced(link)
        self._after(stream.error)

    def short_connection(self, msg_name: str, round_trips: int) -> None:
        """connect → ``round_trips`` closed-loop round trips → close; rows ``connect``,
        ``msg_name`` and ``session``."""
        limit = self.opts.connections_per_user
        if limit and self.connections >= limit:
            raise StopUser()
        self.connections += 1
        opened = self.connect()
        if opened is not None:
            self.pingpong_session(opened, msg_name, round_trips)

    def pingpong_session(
        self, opened: tuple[Link, int, Timer], msg_name: str, messages: int
    ) -> Stream:
        """Up to ``messages`` closed-loop round trips on an opened connection, then close it;
        rows ``msg_name`` and ``session`` (connect → closed). Returns the ended stream."""
        link, conn_id, timer = opened
        cfg = replace(
            stream_config(self.opts, self.transport, self.name_prefix + msg_name),
            pingpong=True,
            max_messages=messages,
            duration_ns=None,
        )
        stream = Stream(cfg, self.sink, user_id=self.user_id, conn_id=conn_id, nbytes=link.nbytes)
        stream.run_pingpong(link)
        self.sink(
            timer.sample(
                self.transport,
                self.name_prefix + "session",
                stream.sent * link.nbytes,
                stream.error,
                user_id=self.user_id,
                conn_id=conn_id,
            )
        )
        self._after(stream.error)
        return stream

    def _after(self, error: str | None) -> None:
        """After a stream or call: reset the backoff, or wait it out before reconnecting."""
        if error is None:
            self.backoff.reset()
        else:
            self.backoff_wait()

    def backoff_wait(self) -> None:
        """Wait out the next reconnect delay (doubling to a cap)."""
        gevent.sleep(self.backoff.next_delay())
