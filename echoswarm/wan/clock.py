"""A nanosecond wake-up for the relay's event loop: a Linux timerfd, watched by epoll.

Why not the event loop's own timers: epoll (and so asyncio, uvloop/libuv and selectors) takes
its timeout in whole milliseconds, rounded up, so every scheduled release would wake up to 1 ms
late — on every hop, twice per round trip. A timerfd is armed with an absolute
``CLOCK_MONOTONIC`` time in nanoseconds (the clock ``time.monotonic_ns`` reads), becomes
readable when it expires, and so wakes the same ``epoll_wait`` that watches the sockets: one
thread, no GIL hand-offs, no busy waiting. Re-arming it also clears its expiry count, so the loop
never has to ``read`` it. ``python -m bench wan --timers`` measures this against the
alternatives (asyncio and uvloop timers, epoll timeouts, a sleeping thread); figures in
``bench/README.md``.

``os.timerfd_*`` exists from Python 3.13; before that the two calls go through ctypes.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLOCK_MONOTONIC = 1
TFD_TIMER_ABSTIME = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = 0o2000000
PR_SET_TIMERSLACK = 29


class ClockError(OSError):
    """No timerfd on this system."""


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class TimerFd:
    """A one-shot absolute-time timerfd: ``arm(t_ns)``, ``disarm()``, ``fileno()``, ``close()``."""

    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            raise ClockError("timerfd needs Linux")
        self._native = hasattr(os, "timerfd_create")
        if self._native:
            self.fd: int = os.timerfd_create(  # type: ignore[attr-defined,unused-ignore]
                os.CLOCK_MONOTONIC,  # type: ignore[attr-defined,unused-ignore]
                flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC,  # type: ignore[attr-defined,unused-ignore]
            )
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            create, settime = libc.timerfd_create, libc.timerfd_settime
        except (OSError, AttributeError) as exc:
            raise ClockError(f"timerfd unavailable: {exc}") from None
        create.argtypes = [ctypes.c_int, ctypes.c_int]
        settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        fd = create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise ClockError(err, f"timerfd_create: {os.strerror(err)}")
        self.fd = fd
        self._settime = settime
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.addressof(self._spec)

    def fileno(self) -> int:
        return self.fd

    def arm(self, at_ns: int) -> None:
        """Expire at monotonic time ``at_ns`` (at once if it has passed)."""
        at_ns = at_ns if at_ns > 0 else 1  # 0 would disarm
        if self._native:
            os.timerfd_settime_ns(  # type: ignore[attr-defined,unused-ignore]
                self.fd,
                flags=os.TFD_TIMER_ABSTIME,  # type: ignore[attr-defined,unused-ignore]
                initial=at_ns,
            )
            return
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(at_ns, 1_000_000_000)
        self._settime(self.fd, TFD_TIMER_ABSTIME, self._spec_ref, None)

    def disarm(self) -> None:
        if self._native:
            os.timerfd_settime_ns(self.fd, initial=0)  # type: ignore[attr-defined,unused-ignore]
            return
        self._spec.it_value.tv_sec = self._spec.it_value.tv_nsec = 0
        self._settime(self.fd, 0, self._spec_ref, None)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def tighten_timer_slack() -> bool:
    """Ask Linux for 1 ns timer slack (default 50 µs) for this thread's timed waits.

    A timerfd is not subject to slack, but ``epoll_wait`` timeouts and sleeps are; this keeps
    the comparison modes honest and costs nothing. True if applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
