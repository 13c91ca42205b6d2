"""One timetable per process for paced sends, instead of one sleeping greenlet per stream.

A paced stream used to own a sender greenlet that slept until each message was due: at 1,000
streams that is 10,000 timer arm/fire/switch cycles a second, each a libev timer plus a greenlet
switch and their garbage. Here every paced stream registers a *fire* callable with the
process's :class:`PacedScheduler`; one greenlet wakes when the earliest one is due and calls
every callable that is due, in due-time order. A fire callable sends that stream's message (it
must not block: a send that would block is handed to a greenlet of that stream, see
``_stream.Stream``) and returns when the stream's next message is due, or None to leave.

:class:`Timetable` is the sans-I/O part (a heap of ``[due_ns, order, fire]``, clock injected) so
its ordering can be tested without gevent; :class:`PacedScheduler` adds the greenlet that sleeps
until the next due time.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
from collections.abc import Callable
from typing import Any

import gevent
from gevent.hub import Waiter, get_hub

from echoswarm.measure import now_ns

TIMER_PRIORITY = 2  # libev's EV_MAXPRI: invoked before lower-priority watchers pending with it

Fire = Callable[[], "int | None"]
"""Called when due: returns the next due time (monotonic ns) or None to leave the timetable."""


class Timetable:
    """Due-time ordered callables; ties run in the order they were first added."""

    __slots__ = ("_heap", "_order", "clock")

    def __init__(self, clock: Callable[[], int] = now_ns) -> None:
        # Entries are mutable lists so a re-scheduled entry is reused: no allocation per message.
        self._heap: list[list] = []
        self._order = itertools.count()
        self.clock = clock

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, due_ns: int, fire: Fire) -> None:
        heapq.heappush(self._heap, [due_ns, next(self._order), fire])

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run_due(self) -> int | None:
        """Call everything due by now (re-reading the clock as time passes); the next due time
        after that, or None when the timetable is empty."""
        heap = self._heap
        clock = self.clock
        now = clock()
        while heap:
            entry = heap[0]
            if entry[0] > now:
                now = clock()  # the calls so far took time: more may have fallen due
                if entry[0] > now:
                    return int(entry[0])
            try:
                due = entry[2]()
            except Exception:  # a broken callable must not stall every other stream
                due = None
            if due is None:
                heapq.heappop(heap)
            else:
                entry[0] = due
                heapq.heapreplace(heap, entry)  # entry is heap[0]: this sifts it down
        return None


class PacedScheduler:
    """The greenlet that runs a :class:`Timetable` on gevent's clock (one per process).

    It sleeps on a libev timer of the highest priority: in a loop iteration where the sends
    fall due it runs before the receivers' I/O callbacks of that iteration (gevent's own
    ``Timeout``, hence ``Event.wait(timeout)``, uses the lowest priority). libev's epoll
    backend waits in whole milliseconds, so a send still leaves up to ~1 ms after its due time
    when nothing else wakes the loop; that is recorded as sender lag, never hidden.
    """

    def __init__(self) -> None:
        self.table = Timetable()
        self._sleep_until: int | None = None  # when the greenlet wakes next (None: awake)
        self._waiter: Waiter[None] | None = None
        self._timer: Any = None
        self._greenlet: gevent.Greenlet | None = None

    def add(self, due_ns: int, fire: Fire) -> None:
        """Call ``fire`` at ``due_ns`` (at once if that has passed), then as it says."""
        self.table.add(due_ns, fire)
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        elif self._sleep_until is not None and due_ns < self._sleep_until:
            self._wake()

    def _wake(self) -> None:
        """End the current sleep early (called from another greenlet)."""
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
        while True:
            due = table.run_due()
            if due is None:
                # Nothing scheduled: sleep until add() wakes us (an hour at most, unref'd so
                # an idle scheduler never keeps a process alive).
                until, delay = 1 << 62, 3600.0
            else:
                until, delay = due, (due - now_ns()) / 1e9
                if delay <= 0:
                    continue
            waiter: Waiter[None] = Waiter(hub)
            timer = loop.timer(delay, ref=False, priority=TIMER_PRIORITY)
            self._timer = timer
            self._waiter = waiter
            self._sleep_until = until
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
