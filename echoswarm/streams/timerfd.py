"""A Linux timerfd armed at absolute monotonic nanoseconds: sub-millisecond wake-ups for the
paced senders, whatever event loop watches the descriptor.

Why: both event loops the users run on wait in whole milliseconds. libev's epoll backend (the
gevent hub) rounds its timeout up to the next millisecond, and so does CPython's
``select.epoll.poll`` under asyncio; uvloop's timers count milliseconds. A paced send therefore
left 0-1 ms after its due time, and that sender lag (recorded, never hidden) sat inside every
latency the harness reported. A timerfd is an hrtimer: the kernel makes the descriptor readable
at the programmed instant (tens of microseconds late at most), which wakes ``epoll_wait`` early.
One timerfd per scheduler serves all its streams: it is re-armed for the earliest due time.

``CLOCK_MONOTONIC`` is the clock ``time.monotonic_ns()`` reads (:mod:`echoswarm.measure`), so a
due time from the schedule is programmed as is. Python 3.13 has ``os.timerfd_create``; this
project supports 3.11, hence ctypes. On systems without timerfd :func:`available` is False and
callers fall back to their loop's own timers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

CLOCK_MONOTONIC = 1
TFD_TIMER_ABSTIME = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
PR_SET_TIMERSLACK = 29


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
    except (OSError, AttributeError):
        _libc = None


def available() -> bool:
    return _libc is not None


def reduce_timer_slack() -> None:
    """Ask for 1 µs timer slack in this thread (Linux defaults to 50 µs for poll timeouts)."""
    if _libc is not None:
        _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


class TimerFd:
    """One timerfd: :meth:`arm` at an absolute monotonic time, watch :attr:`fd` for reading,
    :meth:`clear` when it fired."""

    __slots__ = ("fd", "_spec", "_ref")

    def __init__(self) -> None:
        if _libc is None:
            raise OSError("timerfd is not available on this system")
        fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd: int = fd
        self._spec = _Itimerspec()
        self._ref = ctypes.byref(self._spec)

    def arm(self, due_ns: int) -> None:
        """Fire at ``due_ns`` (monotonic; at once if it has passed). Replaces any earlier arm."""
        value = self._spec.it_value
        if due_ns <= 0:
            due_ns = 1  # 0 would disarm it
        value.tv_sec, value.tv_nsec = divmod(due_ns, 1_000_000_000)
        assert _libc is not None
        if _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, self._ref, None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def disarm(self) -> None:
        value = self._spec.it_value
        value.tv_sec = value.tv_nsec = 0
        assert _libc is not None
        _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, self._ref, None)

    def clear(self) -> None:
        """Consume the expiry count (the descriptor stops being readable)."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
