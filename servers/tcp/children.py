"""Child processes for the process models (fork, prefork): start, reap, stop — no orphans.

A child never returns into the parent's code: it runs its function and leaves with
``os._exit``, so it cannot print the LISTENING line again, run the parent's ``finally`` blocks or
flush the parent's buffers. It gets its own ``Stop`` (SIGTERM/SIGINT), and on Linux asks the
kernel to SIGTERM it if the parent dies, even by SIGKILL. The parent reaps on SIGCHLD (through
a ``Wakeup`` pipe, so its loop wakes at once) and, on shutdown, SIGTERMs every child and waits
for all of them, escalating to SIGKILL after ``JOIN_SECONDS``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

from servers.tcp.discipline import JOIN_SECONDS, Stop, Wakeup

log = logging.getLogger("servers.tcp")

PR_SET_PDEATHSIG = 1
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _libc() -> ctypes.CDLL | None:
    """Loaded once in the parent, so each fork does not pay for dlopen again."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _die_with_parent(libc: ctypes.CDLL | None, parent: int) -> None:
    if libc is None:
        return
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except AttributeError:
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


class Children:
    """The parent's view of its children. Create it before forking; call ``close`` at the end."""

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.exited = Wakeup()
        self._libc = _libc()
        self._previous = signal.signal(signal.SIGCHLD, self._on_sigchld)

    def _on_sigchld(self, signum: int, frame: FrameType | None) -> None:
        self.exited.notify()

    def fileno(self) -> int:
        """Readable when a child may have exited: poll it with the rest, then call ``reap``."""
        return self.exited.fileno()

    def spawn(self, body: Callable[[Stop], None], *, close_in_child: tuple[int, ...] = ()) -> int:
        """Fork; the child closes ``close_in_child`` fds, runs ``body(stop)`` and exits.

        Raises OSError in the parent if the system cannot fork (EAGAIN, ENOMEM).
        """
        parent = os.getpid()
        # Block shutdown signals across fork: until the child has installed its own handlers a
        # SIGTERM must not run the parent's handler in the child (it would stop the parent).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            raise
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            self.pids.add(pid)
            return pid
        code = 0
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.exited.close()
            for fd in close_in_child:
                try:
                    os.close(fd)
                except OSError:
                    pass
            stop = Stop()
            stop.install(*SHUTDOWN_SIGNALS)
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            _die_with_parent(self._libc, parent)
            body(stop)
        except BaseException:  # a child must never unwind into the parent's code
            log.exception("child %d failed", os.getpid())
            code = 1
        finally:
            # No logging.shutdown(): our handler writes stderr unbuffered, and skipping it
            # roughly halves the cost of a short-lived child.
            os._exit(code)

    def reap(self) -> list[int]:
        """Collect every exited child without blocking; return their pids."""
        self.exited.drain()
        done = []
        while self.pids:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.pids.clear()
                break
            if pid == 0:
                break
            self.pids.discard(pid)
            done.append(pid)
        return done

    def stop_all(self, timeout: float = JOIN_SECONDS) -> None:
        """SIGTERM every child and reap them all; SIGKILL whatever outlives ``timeout``."""
        self._signal_all(signal.SIGTERM)
        if not self._wait_all(timeout):
            log.warning("%d children ignored SIGTERM; killing them", len(self.pids))
            self._signal_all(signal.SIGKILL)
            self._wait_all(timeout)

    def _signal_all(self, signum: int) -> None:
        for pid in list(self.pids):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _wait_all(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.exited.fileno(), select.POLLIN)
        while True:
            self.reap()
            left = deadline - time.monotonic()
            if not self.pids or left <= 0:
                return not self.pids
            poller.poll(left * 1000.0)

    def close(self) -> None:
        signal.signal(signal.SIGCHLD, self._previous)
        self.exited.close()
