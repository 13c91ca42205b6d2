"""A Linux timerfd armed at absolute monotonic nanoseconds: sub-millisecond wake-ups for the
paced senders and the WAN relay, whatever event loop watches the descriptor.

Why: every event loop the harness runs waits in whole milliseconds. libev's epoll backend (the
gevent hub) rounds its timeout up to the next millisecond, and so does CPython's
``select.epoll.poll`` under asyncio; uvloop's timers count milliseconds. A paced send therefore
left 0-1 ms after its due time, and that sender lag (recorded, never hidden) sat inside every
latency the harness reported; a relay hop would add the same. A timerfd is an hrtimer: the
kernel makes the descriptor readable at the programmed instant (tens of microseconds late at
most), which wakes the same ``epoll_wait`` that watches the sockets. One timerfd per loop serves
everything due on it: it is re-armed for the earliest due time (re-arming also resets its
expiry count). ``python -m bench wan`` measures it against the alternatives.

``CLOCK_MONOTONIC`` is the clock ``time.monotonic_ns()`` reads (:mod:`echoswarm.measure`), so a
due time from a schedule is programmed as is. ``os.timerfd_*`` exists from Python 3.13; before
that the two calls go through ctypes. Where there is no timerfd, :func:`available` is False and
callers fall back to their loop's own timers.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

CLOCK_MONOTONIC = 1
TFD_TIMER_ABSTIME = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = 0o2000000
PR_SET_TIMERSLACK = 29


class TimerFdError(OSError):
    """No timerfd on this system (or it could not be created)."""


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_NATIVE = hasattr(os, "timerfd_create")
_libc: Any = None
if sys.platform.startswith("linux") and not _NATIVE:
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
    except (OSError, AttributeError):
        _libc = None


def available() -> bool:
    return sys.platform.startswith("linux") and (_NATIVE or _libc is not None)


def reduce_timer_slack() -> bool:
    """Ask Linux for 1 ns timer slack (default 50 µs) for this thread's timed waits (a timerfd
    is not subject to slack, but ``epoll_wait`` timeouts and sleeps are). True if applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class TimerFd:
    """One absolute-time timerfd: :meth:`arm` at a monotonic time, watch :attr:`fd` for reading,
    :meth:`clear` (or re-arm) when it fired, :meth:`disarm`, :meth:`close`."""

    __slots__ = ("fd", "_spec", "_ref")

    def __init__(self) -> None:
        if not available():
            raise TimerFdError("timerfd is not available on this system")
        if _NATIVE:
            self.fd: int = os.timerfd_create(  # type: ignore[attr-defined,unused-ignore]
                os.CLOCK_MONOTONIC,  # type: ignore[attr-defined,unused-ignore]
                flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC,  # type: ignore[attr-defined,unused-ignore]
            )
            return
        fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise TimerFdError(err, f"timerfd_create: {os.strerror(err)}")
        self.fd = fd
        self._spec = _Itimerspec()
        self._ref = ctypes.addressof(self._spec)

    def fileno(self) -> int:
        return self.fd

    def arm(self, due_ns: int) -> None:
        """Fire at ``due_ns`` (monotonic; at once if it has passed). Replaces any earlier arm."""
        due_ns = due_ns if due_ns > 0 else 1  # 0 would disarm
        if _NATIVE:
            os.timerfd_settime_ns(  # type: ignore[attr-defined,unused-ignore]
                self.fd,
                flags=os.TFD_TIMER_ABSTIME,  # type: ignore[attr-defined,unused-ignore]
                initial=due_ns,
            )
            return
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(due_ns, 1_000_000_000)
        if _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, self._ref, None) < 0:
            err = ctypes.get_errno()
            raise TimerFdError(err, f"timerfd_settime: {os.strerror(err)}")

    def disarm(self) -> None:
        if _NATIVE:
            os.timerfd_settime_ns(self.fd, initial=0)  # type: ignore[attr-defined,unused-ignore]
            return
        self._spec.it_value.tv_sec = self._spec.it_value.tv_nsec = 0
        _libc.timerfd_settime(self.fd, 0, self._ref, None)

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
