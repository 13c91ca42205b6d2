"""The relay's event loop: one epoll set for the sockets, one heap of timed callbacks.

Not asyncio: the relay does little per event (a ``recvmsg``, a heap push, later a ``send``), and
a bare loop keeps that path short, needs no dependency, and makes the timer a timerfd in the
same epoll set (see :mod:`.clock`: epoll's own timeout only has millisecond resolution). Per
timed wake-up it costs about what asyncio's loop does with the same timerfd (uvloop's is 15–25 %
cheaper; in the relay the socket calls dominate — ``bench/README.md``). ``timer="poll"`` uses
the epoll timeout instead — kept to measure the difference (``python -m bench wan``), and as
the fallback where a timerfd cannot be created.

Callbacks never run early: a timed callback runs once ``time.monotonic_ns()`` has reached its
due time.
"""

from __future__ import annotations

import heapq
import itertools
import select
import time
from collections.abc import Callable

from echoswarm.streams.timerfd import TimerFd, TimerFdError

TIMERS = ("timerfd", "poll")
LATE_BUCKETS = 40  # up to ~9 minutes late

_IN = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP
_OUT = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR

Callback = Callable[[], None]


class Reactor:
    """``add_reader``/``add_writer``/``remove_*``/``forget`` on fds, ``call_at`` on monotonic ns,
    ``run`` until ``stop``."""

    def __init__(self, timer: str = "timerfd") -> None:
        if timer not in TIMERS:
            raise ValueError(f"timer must be one of {TIMERS}")
        self._ep = select.epoll()
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._masks: dict[int, int] = {}
        self._heap: list[tuple[int, int, Callback]] = []
        self._seq = itertools.count()
        self._tfd: TimerFd | None = None
        self._armed_ns = 0
        self.timer = timer
        if timer == "timerfd":
            try:
                self._tfd = TimerFd()
            except TimerFdError:
                self.timer = "poll"
        if self._tfd is not None:
            self._ep.register(self._tfd.fileno(), select.EPOLLIN)
        self._stopping = False
        self.wakeups = 0  # epoll returns
        # Timed callbacks by lateness: bucket b counts those late by [2^(b-1), 2^b) ns.
        self.late = [0] * LATE_BUCKETS

    # -- fds -----------------------------------------------------------------------------------

    def _update(self, fd: int) -> None:
        mask = (select.EPOLLIN if fd in self._readers else 0) | (
            select.EPOLLOUT if fd in self._writers else 0
        )
        old = self._masks.get(fd)
        if mask == old:
            return
        if old is None:
            self._ep.register(fd, mask)
            self._masks[fd] = mask
        elif mask == 0:
            self._ep.unregister(fd)
            del self._masks[fd]
        else:
            self._ep.modify(fd, mask)
            self._masks[fd] = mask

    def add_reader(self, fd: int, cb: Callback) -> None:
        self._readers[fd] = cb
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, cb: Callback) -> None:
        self._writers[fd] = cb
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    def forget(self, fd: int) -> None:
        """Drop every interest in ``fd`` (call before closing it)."""
        self._readers.pop(fd, None)
        self._writers.pop(fd, None)
        if self._masks.pop(fd, None) is not None:
            try:
                self._ep.unregister(fd)
            except OSError:
                pass

    # -- time ----------------------------------------------------------------------------------

    def call_at(self, due_ns: int, cb: Callback) -> None:
        """Run ``cb`` once the monotonic clock reaches ``due_ns``."""
        heapq.heappush(self._heap, (due_ns, next(self._seq), cb))

    def _run_due(self) -> None:
        heap, late = self._heap, self.late
        now = time.monotonic_ns()
        while heap and heap[0][0] <= now:
            due, _, cb = heapq.heappop(heap)
            late[min((now - due).bit_length(), LATE_BUCKETS - 1)] += 1
            cb()
            now = time.monotonic_ns()  # callbacks take time; pick up what became due

    def lateness_ns(self, q: float) -> int:
        """An upper bound of the ``q`` quantile of how late timed callbacks ran (0 if none ran),
        from a histogram with power-of-two buckets (so within a factor of two)."""
        total = sum(self.late)
        if not total:
            return 0
        seen = 0
        for bucket, count in enumerate(self.late):
            seen += count
            if seen >= q * total:
                return (1 << bucket) - 1
        return (1 << (LATE_BUCKETS - 1)) - 1

    def _next_wait(self) -> float:
        """The epoll timeout, in seconds (-1 = until an fd is ready), arming the timerfd."""
        heap = self._heap
        tfd = self._tfd
        if tfd is not None:
            nxt = heap[0][0] if heap else 0
            if nxt != self._armed_ns:
                if nxt:
                    tfd.arm(nxt)
                else:
                    tfd.disarm()
                self._armed_ns = nxt
            return -1
        if not heap:
            return -1
        # epoll rounds the timeout up to whole ms; so a release is late by up to 1 ms.
        return max(0.0, (heap[0][0] - time.monotonic_ns()) / 1e9)

    # -- loop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Make :meth:`run` return after the current pass (call from this thread)."""
        self._stopping = True

    def run(self) -> None:
        readers, writers = self._readers, self._writers
        poll = self._ep.poll
        tfd_fd = self._tfd.fileno() if self._tfd is not None else -1
        while not self._stopping:
            events = poll(self._next_wait())
            self.wakeups += 1
            self._run_due()
            for fd, ev in events:
                if fd == tfd_fd:
                    self._armed_ns = -1  # expired: must be re-armed (which clears it)
                    continue
                if ev & _IN:
                    cb = readers.get(fd)
                    if cb is not None:
                        cb()
                if ev & _OUT:
                    cb = writers.get(fd)
                    if cb is not None:
                        cb()
            self._run_due()

    def close(self) -> None:
        if self._tfd is not None:
            self._tfd.close()
        self._ep.close()
