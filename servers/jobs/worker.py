"""``python -m servers.jobs.worker RQ-WORKER-ARGS`` — rq's own ``rq worker``, made orphan-proof.

``python -m servers jobs`` starts each queue worker through this module instead of the ``rq``
script so that nothing it leaves behind can outlive it: rq forks a *work horse* per job and a
*scheduler* process, neither of which would notice their worker dying. Here every process the
worker forks asks the kernel (``PR_SET_PDEATHSIG``) for SIGKILL when the worker dies, and the
worker itself gets SIGKILL when the server dies (the pdeath shim it was started through asks for
SIGTERM, which rq treats as a *warm* shutdown that waits for the running job). Everything else
is rq's command line unchanged.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1

_libc: ctypes.CDLL | None = None
_forking_pid = 0


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` dies; exit now if it is already gone."""
    if _libc is None:
        return
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent and os.getppid() != parent:
        os._exit(1)


def _before_fork() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _after_fork_in_child() -> None:
    _die_with_parent(_forking_pid)


def main(argv: list[str]) -> int:
    global _libc
    if sys.platform.startswith("linux"):
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = None
    _die_with_parent(int(os.environ.get("ECHOSWARM_PARENT_PID", "0") or 0))
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
    from rq.cli import main as rq_main

    import servers.jobs.tasks  # noqa: F401  (imported once here, not in every forked horse)

    try:
        rq_main(args=["worker", *argv], prog_name="rq")
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
