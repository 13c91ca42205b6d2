"""Due-time scheduling shared by the gevent and asyncio drivers: a sans-I/O timetable, and the
asyncio pacer that runs one on a timerfd.

:class:`Timetable` is a heap of ``[due_ns, order, fire]``: ``run_due`` calls every callable that
is due, in due-time order (ties in the order they were added); a callable returns its next due
time, or None to leave. Entries are reused, so a stream that stays on the timetable allocates
nothing per message. The clock is injected, so ordering is tested without any loop.

:class:`AsyncPacer` runs a timetable on an asyncio loop, woken by a timerfd
(:mod:`echoswarm.streams.timerfd`) programmed for the earliest due time, so a send leaves tens
of microseconds after its due time rather than up to a millisecond (asyncio's epoll timeouts are
whole milliseconds). The gevent driver has its own runner (``echoswarm.users.scheduler``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
from collections.abc import Callable

from echoswarm.measure import now_ns
from echoswarm.streams import timerfd

Fire = Callable[[], "int | None"]
"""Called when due: returns the next due time (monotonic ns) or None to leave the timetable."""


class Timetable:
    """Due-time ordered callables; ties run in the order they were first added."""

    __slots__ = ("_heap", "_order", "clock")

    def __init__(self, clock: Callable[[], int] = now_ns) -> None:
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


class AsyncPacer:
    """A :class:`Timetable` on an asyncio loop, woken by a timerfd (or, where there is none,
    by the loop's own timer)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.table = Timetable()
        self._armed: int | None = None  # due time the wake-up is set for
        self._fallback: asyncio.TimerHandle | None = None
        self._tfd: timerfd.TimerFd | None = None
        if timerfd.available() and os.environ.get("ECHOSWARM_TIMERS", "timerfd") == "timerfd":
            timerfd.reduce_timer_slack()
            self._tfd = timerfd.TimerFd()
            loop.add_reader(self._tfd.fd, self._on_wake)

    def add(self, due_ns: int, fire: Fire) -> None:
        """Call ``fire`` at ``due_ns`` (at once if that has passed), then as it says."""
        self.table.add(due_ns, fire)
        if self._armed is None or due_ns < self._armed:
            self._arm(due_ns)

    def wait_until(self, due_ns: int) -> asyncio.Future[None]:
        """A future that completes at ``due_ns``."""
        fut: asyncio.Future[None] = self.loop.create_future()

        def fire() -> None:
            if not fut.done():
                fut.set_result(None)

        self.add(due_ns, fire)
        return fut

    def _arm(self, due_ns: int) -> None:
        self._armed = due_ns
        if self._tfd is not None:
            self._tfd.arm(due_ns)
            return
        if self._fallback is not None:
            self._fallback.cancel()
        delay = max(0.0, (due_ns - now_ns()) / 1e9)
        self._fallback = self.loop.call_later(delay, self._on_wake)

    def _on_wake(self) -> None:
        if self._tfd is not None:
            self._tfd.clear()
        self._armed = None
        self._fallback = None
        nxt = self.table.run_due()
        if nxt is not None:
            self._arm(nxt)

    def close(self) -> None:
        if self._tfd is not None:
            self.loop.remove_reader(self._tfd.fd)
            self._tfd.close()
            self._tfd = None
