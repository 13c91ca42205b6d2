"""One timetable per process for paced TCP/WebSocket sends, woken by a timerfd.

Every paced stream registers a *fire* callable with the process's :class:`PacedScheduler`; one
greenlet wakes when the earliest one is due and calls every callable that is due, in due-time
order (:class:`~echoswarm.streams.pacer.Timetable`). A fire callable sends that stream's message
(it must not block: a send that would block is handed to a greenlet of that stream, see
``gevent_stream.Stream``) and returns when the stream's next message is due, or None to leave.
One greenlet instead of a sleeping sender per stream: at 1,000 streams that saves 10,000 timer
arm/fire/switch cycles a second.

The wake-up is a timerfd (:mod:`echoswarm.streams.timerfd`) watched by the hub at the highest
priority, not a libev timer: libev's epoll backend waits in whole milliseconds, so a timer-woken
send left up to ~1 ms after its due time — sender lag that sat in every latency we reported. The
timerfd wakes ``epoll_wait`` at the due instant (tens of microseconds). Where there is no timerfd
a libev timer is used, as before.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import gevent
from gevent.hub import Waiter, get_hub

from echoswarm.measure import now_ns
from echoswarm.streams import timerfd
from echoswarm.streams.pacer import Fire, Timetable

TOP_PRIORITY = 2  # libev's EV_MAXPRI: invoked before lower-priority watchers pending with it
READ = 1


class PacedScheduler:
    """The greenlet that runs a :class:`Timetable` on the gevent hub (one per process)."""

    def __init__(self) -> None:
        self.table = Timetable()
        self._sleep_until: int | None = None  # when the greenlet wakes next (None: awake)
        self._waiter: Waiter[None] | None = None
        self._timer: Any = None
        self._greenlet: gevent.Greenlet | None = None
        self._tfd: timerfd.TimerFd | None = None
        if timerfd.available():
            timerfd.reduce_timer_slack()
            self._tfd = timerfd.TimerFd()

    def add(self, due_ns: int, fire: Fire) -> None:
        """Call ``fire`` at ``due_ns`` (at once if that has passed), then as it says."""
        self.table.add(due_ns, fire)
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        elif self._sleep_until is not None and due_ns < self._sleep_until:
            self._wake_at(due_ns)

    def _wake_at(self, due_ns: int) -> None:
        """Bring the current sleep's end forward (called from another greenlet)."""
        if self._tfd is not None:
            self._sleep_until = due_ns
            self._tfd.arm(due_ns)
            return
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        self._sleep_until = None
        self._timer.stop()  # only one of the timer and this wake-up resumes the greenlet
        get_hub().loop.run_callback(waiter.switch, None)

    def _run(self) -> None:
        table = self.table
        hub = get_hub()
        loop = hub.loop
        tfd = self._tfd
        watcher = None
        if tfd is not None:
            # unref'd: an idle scheduler never keeps a process alive
            watcher = loop.io(tfd.fd, READ, ref=False, priority=TOP_PRIORITY)
        while True:
            due = table.run_due()
            if due is None:
                until, delay = 1 << 62, 3600.0  # nothing scheduled: sleep until add() wakes us
            else:
                until, delay = due, (due - now_ns()) / 1e9
                if delay <= 0:
                    continue
            waiter: Waiter[None] = Waiter(hub)
            self._waiter = waiter
            self._sleep_until = until
            if tfd is not None and watcher is not None:
                if due is None:
                    tfd.disarm()
                else:
                    tfd.arm(due)
                watcher.start(waiter.switch, None)
                try:
                    waiter.get()
                finally:
                    watcher.stop()
                    tfd.clear()
                    self._waiter = None
                    self._sleep_until = None
                continue
            timer = loop.timer(delay, ref=False, priority=TOP_PRIORITY)
            self._timer = timer
            timer.start(waiter.switch, None)
            try:
                waiter.get()
            finally:
                timer.stop()
                timer.close()
                self._waiter = None
                self._sleep_until = None


def send_nowait(sock: socket.socket, buf: bytes | bytearray) -> memoryview | None:
    """Hand ``buf`` to the kernel without waiting: None when it took everything, else the
    unsent tail (the send buffer is full; the caller finishes it in a greenlet of its own)."""
    try:
        # gevent's send takes a timeout; 0 = raise instead of waiting for room.
        n = sock.send(buf, 0, 0.0)  # type: ignore[call-arg]
    except BlockingIOError:
        n = 0
    return None if n == len(buf) else memoryview(buf)[n:]


_scheduler: PacedScheduler | None = None
_pid = 0


def scheduler() -> PacedScheduler:
    """This process's scheduler (a fresh one after a fork: ``--processes`` forks workers)."""
    global _scheduler, _pid
    if _scheduler is None or _pid != os.getpid():
        _scheduler = PacedScheduler()
        _pid = os.getpid()
    return _scheduler
