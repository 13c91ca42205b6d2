"""Faults between real Locust processes (a master and workers started directly, not through the
orchestrator): a master that vanishes, a master killed mid-run, a worker whose clock is off.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from echoswarm.orchestrate import commands
from echoswarm.results import read_events, read_intervals, read_run, run_state
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


@pytest.mark.timeout(90)
def test_a_directory_left_by_a_killed_master_reads_as_crashed(tmp_path: Path) -> None:
    """Issue 11 item 15: run.json still says "running" after its writer was SIGKILLed; every
    reader says it crashed, and how much data the directory holds."""
    run_dir = tmp_path / "run"
    port = _free_port()
    master = _master(run_dir, port, tmp_path)
    worker = _worker(port, tmp_path, "worker", "--master-timeout-s", "3")
    try:
        parts = run_dir / "events.parts"
        _wait_until(lambda: len(list(parts.glob("part-*.parquet"))) >= 2, "two report intervals")
        alive = run_state(read_run(run_dir))
        assert alive.state == "running" and f"pid {master.pid}" in alive.detail
        master.popen.kill()
        master.popen.wait(timeout=10)
    finally:
        master.stop()
        worker.stop()
    run = read_run(run_dir)
    assert run["status"] == "running" and run["writer"]["pid"] == master.pid
    state = run_state(run)
    assert state.state == "crashed" and state.incomplete
    assert f"its writer (pid {master.pid} on " in state.detail and "last update" in state.detail
    assert f"{run['count']:,} samples" in state.holds and run["count"] > 0

    report = _analysis("report", str(run_dir))
    assert report.returncode == 0, report.stderr
    assert "running — crashed: its writer" in report.stdout
    md = (run_dir / "report.md").read_text()
    assert "running — crashed: its writer" in md and f"{run['count']:,} samples" in md
    import analysis  # compare prints this same text for each incomplete run

    loaded = analysis.load(run_dir)
    assert loaded.state.state == "crashed" and loaded.status_text.startswith("running — crashed")


def _analysis(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [procs.PYTHON, "-m", "analysis", *args],
        cwd=procs.ROOT,
        env=procs.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.timeout(90)
def test_master_measures_a_skewed_worker_clock_and_aligns_its_timeline(tmp_path: Path) -> None:
    """Issue 13 item 2: one of two workers reads its wall clock 3 s ahead (the testing knob
    ECHOSWARM_TEST_CLOCK_SKEW_MS). The master measures the offset NTP-style within its error
    bound, warns, and shifts that worker's seconds and event times onto its own clock."""
    skew_ms = 3000.0
    run_dir = tmp_path / "run"
    port = _free_port()
    master = _master(run_dir, port, tmp_path, workers=2, run_time="6s")
    plain = _worker(port, tmp_path, "plain")
    skewed = _worker(port, tmp_path, "skewed", env={"ECHOSWARM_TEST_CLOCK_SKEW_MS": str(skew_ms)})
    try:
        assert master.popen.wait(timeout=60) == 0, master.stderr_text()[-2000:]
    finally:
        master.stop()
        plain.stop()
        skewed.stop()
    run = read_run(run_dir)
    assert run["status"] == "complete"
    by_offset = sorted(run["workers"], key=lambda w: w["clock_offset_ms"])
    near, far = by_offset
    for w, true_ms in ((near, 0.0), (far, skew_ms)):
        assert w["clock_samples"] >= 3
        assert 0 <= w["clock_offset_bound_ms"] < 50, w
        # the NTP bound: the estimate is within half the best round trip of the truth
        assert abs(w["clock_offset_ms"] - true_ms) <= w["clock_offset_bound_ms"] + 1.0, w
    assert near["clock_shift_s"] == 0 and near["clock_event_shift_ms"] == 0
    assert "clock_warning" not in near
    assert far["clock_shift_s"] == 3 and "clock_warning" in far
    assert far["clock_event_shift_ms"] == pytest.approx(skew_ms, abs=5.0)
    assert run["clock_warnings"] == [far["clock_warning"]]
    assert "its clock is" in master.stderr_text()

    # aligned: both workers' events cover the same seconds of the master's clock
    events = read_events(run_dir).to_pandas()
    starts = events.groupby("worker")["start_ns"].agg(["min", "max"]) / 1e9
    assert len(starts) == 2
    assert abs(starts["min"].iloc[0] - starts["min"].iloc[1]) < 1.0, starts
    assert abs(starts["max"].iloc[0] - starts["max"].iloc[1]) < 1.0, starts
    # …and so do the per-second histograms: no seconds 3 s after the end of the run
    seconds = {iv.start_epoch_s for iv in read_intervals(run_dir).intervals}
    assert max(seconds) <= run["end_epoch_s"] + 1, (max(seconds), run["end_epoch_s"])
    assert len(seconds) <= run["duration_s"] + 3
    # the report's "Faults and gaps" shows both offsets, the warning and what they mean
    from analysis import faults, load

    lines = faults.clock_lines(load(run_dir))
    shown = f"clock offset {far['clock_offset_ms']:+.2f} ms"
    assert any(shown in ln and "WARNING" in ln for ln in lines), lines
    assert "every latency is a difference of one host's monotonic clock" in lines[-1]
