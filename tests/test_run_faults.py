"""Faults between real Locust processes (a master and workers started directly, not through the
orchestrator): a master that vanishes, a master killed mid-run, a worker whose clock is off.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from echoswarm.orchestrate import commands
from tests import procs

SYNTHETIC = "tests/locustfiles/synthetic.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _master(
    run_dir: Path, port: int, tmp_path: Path, *, workers: int = 1, run_time: str = "60s"
) -> procs.Proc:
    argv = commands.master_argv(
        SYNTHETIC,
        expect_workers=workers,
        users=2 * workers,
        spawn_rate=2 * workers,
        run_time=run_time,
        results_dir=str(run_dir),
        bind_port=port,
        extra=["--exit-code-on-error", "0"],
        python=procs.PYTHON,
    )
    return procs.start(argv, tmp_path=tmp_path / "master", wait_listening=False)


def _worker(
    port: int, tmp_path: Path, name: str, *extra: str, env: dict[str, str] | None = None
) -> procs.Proc:
    argv = commands.worker_argv(SYNTHETIC, master_port=port, extra=list(extra), python=procs.PYTHON)
    return procs.start(argv, tmp_path=tmp_path / name, wait_listening=False, extra_env=env)


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.1)  # polling with a deadline


@pytest.mark.timeout(60)
def test_master_timeout_makes_an_orphaned_worker_quit_early(tmp_path: Path) -> None:
    """Issue 11 item 14: stock workers wait 60 s for a vanished master; --master-timeout-s 3
    makes it ~3 s (checked once a second)."""
    run_dir = tmp_path / "run"
    port = _free_port()
    master = _master(run_dir, port, tmp_path)
    worker = _worker(port, tmp_path, "worker", "--master-timeout-s", "3")
    try:
        _wait_until(lambda: (run_dir / "live.json").exists(), "first report")
        master.popen.kill()
        master.popen.wait(timeout=10)
        gone = time.monotonic()
        rc = worker.popen.wait(timeout=30)
        waited = time.monotonic() - gone
    finally:
        worker.stop()
        master.stop()
    assert waited < 10, f"the worker took {waited:.1f}s to give up on its master"
    assert "Didn't get heartbeat from master in over 3" in worker.stderr_text()
    assert rc is not None
