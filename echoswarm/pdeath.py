"""``python -m echoswarm.pdeath ARGV...`` — exec ARGV so that it dies with its parent.

The orchestrator starts every child (servers, Locust master and workers) through this shim: it
asks the Linux kernel (prctl PR_SET_PDEATHSIG) to send SIGTERM to the child if the orchestrator
itself dies — even by SIGKILL — so no server or worker is ever orphaned. On other systems it
just execs. ``ECHOSWARM_PARENT_PID`` guards the race where the parent died before prctl ran.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent dies; exit 143 at once if the
    parent named by ``ECHOSWARM_PARENT_PID`` is already gone. (A Python child can call this
    itself instead of being started through the shim: one interpreter start-up less.)"""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass  # best effort: the orchestrator still stops its children itself
    expected = os.environ.get("ECHOSWARM_PARENT_PID")
    if expected and os.getppid() != int(expected):
        raise SystemExit(143)  # the parent is already gone


def main(argv: list[str]) -> None:
    if not argv:
        print("usage: python -m echoswarm.pdeath COMMAND [ARGS...]", file=sys.stderr)
        raise SystemExit(2)
    die_with_parent()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"cannot start {argv[0]}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(127) from None


if __name__ == "__main__":
    main(sys.argv[1:])
