"""End to end: real Locust processes (local, --processes, master + 2 workers) write the results
directory, and its totals agree with events.parquet and with Locust's own final totals."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow.compute as pc
import pytest

import analysis
from echoswarm.measure import epoch_ns
from echoswarm.orchestrate import commands
from echoswarm.results import load_histograms, read_events, read_run, read_summary
from tests import procs

SYNTHETIC = "tests/locustfiles/synthetic.py"
TCP = "tests/locustfiles/tcp_echo.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _locust(
    argv: list[str], tmp_path: Path, name: str, extra_env: dict[str, str] | None = None
) -> procs.Proc:
    return procs.start(argv, tmp_path=tmp_path / name, wait_listening=False, extra_env=extra_env)


def _wait(p: procs.Proc, timeout: float) -> int:
    try:
        return p.popen.wait(timeout=timeout)
    finally:
        p.stop()


def _headless(run_dir: Path, *args: str) -> list[str]:
    """A 4 s headless synthetic run writing its results and Locust's JSON into ``run_dir``."""
    return [
        procs.PYTHON,
        "-m",
        "locust",
        "-f",
        SYNTHETIC,
        "--headless",
        "-t",
        "4s",
        "--results-dir",
        str(run_dir),
        "--json-file",
        str(run_dir / "locust"),
        "--only-summary",
        "--exit-code-on-error",
        "0",
        *args,
    ]


def _locust_totals(json_file: Path) -> Counter[tuple[str, str]]:
    return Counter(
        {(e["method"], e["name"]): e["num_requests"] for e in json.loads(json_file.read_text())}
    )


def _check_consistent(run_dir: Path, locust_json: Path | None = None) -> list[dict]:
    run = read_run(run_dir)
    rows = read_summary(run_dir)
    events = read_events(run_dir)
    by_row = Counter(
        zip(events["request_type"].to_pylist(), events["name"].to_pylist(), strict=True)
    )
    summary = Counter({(r["request_type"], r["name"]): r["count"] for r in rows})
    assert summary == by_row, "summary.csv counts != rows of events.parquet"
    assert run["count"] == sum(summary.values()) == events.num_rows
    failures = sum(r["failures"] for r in rows)
    assert failures == pc.sum(pc.is_valid(events["error"])).as_py()
    hists = load_histograms(run_dir)
    failed = load_histograms(run_dir, "failed")
    for r in rows:
        key = (r["request_type"], r["name"])
        ok = hists[key].get_total_count() if key in hists else 0
        bad = failed[key].get_total_count() if key in failed else 0
        assert ok + bad == r["count"], key
    if locust_json is not None:
        assert _locust_totals(locust_json) == summary, "Locust's own totals differ"
    return rows


@pytest.mark.timeout(90)
def test_master_and_two_workers_against_the_tcp_server(
    tmp_path: Path, start_server: Callable[..., procs.Proc]
) -> None:
    server = start_server("tcp", "--model", "asyncio")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    port = _free_port()
    users = ["--tcp-target", server.target, "--interval-ms", "5"]
    master = _locust(
        commands.master_argv(
            TCP,
            expect_workers=2,
            users=6,
            spawn_rate=6,
            run_time="6s",
            results_dir=str(run_dir),
            bind_port=port,
            extra=["--json-file", str(run_dir / "locust"), "--only-summary", *users],
            python=procs.PYTHON,
        ),
        tmp_path,
        "master",
    )
    workers = [
        _locust(
            commands.worker_argv(TCP, master_port=port, extra=users, python=procs.PYTHON),
            tmp_path,
            f"worker{i}",
        )
        for i in range(2)
    ]
    assert _wait(master, 60) == 0, master.stderr_text()[-3000:]
    for w in workers:
        assert _wait(w, 20) == 0, w.stderr_text()[-2000:]
    rows = _check_consistent(run_dir, run_dir / "locust.json")
    run = read_run(run_dir)
    assert run["status"] == "complete" and run["mode"] == "master"
    assert len(run["workers"]) == 2 and not run["lost_workers"]
    assert all(w["final_report"] and w["samples"] > 0 for w in run["workers"])
    msg = next(r for r in rows if r["name"] == "msg")
    assert msg["request_type"] == "tcp" and msg["count"] > 500 and msg["failures"] == 0
    assert 0 < msg["p50_ms"] <= msg["p99_ms"] <= msg["p999_ms"] <= msg["max_ms"]
    assert msg["lag_count"] == msg["count"]  # paced: every message has a sender lag
    assert sorted(set(read_events(run_dir)["worker"].to_pylist())) == [0, 1]
    assert (run_dir / "locust_stats.csv").exists() and (run_dir / "locust_report.html").exists()
    live = json.loads((run_dir / "live.json").read_text())
    assert live["count"] == run["count"] and live["rows"]


@pytest.mark.timeout(60)
def test_local_headless_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "local"
    run_dir.mkdir()
    # 0.5 asked for, and a cap (100 events/s) this run exceeds: thinned further, and recorded
    argv = _headless(
        run_dir, "-u", "3", "-r", "3", "--events-sample-rate", "0.5", "--events-max-per-s", "100"
    )
    assert _wait(_locust(argv, tmp_path, "local"), 40) == 0
    run = read_run(run_dir)
    assert run["status"] == "complete" and run["mode"] == "local"
    assert run["events_sample_rate"] == 0.5
    rows = read_summary(run_dir)
    summary = Counter({(r["request_type"], r["name"]): r["count"] for r in rows})
    assert _locust_totals(run_dir / "locust.json") == summary
    events = read_events(run_dir)
    rates = set(events["sample_rate"].to_pylist())
    assert run["events_thinned"], run
    assert run["events_min_applied_rate"] <= min(rates) < 0.5, (run, rates)
    assert rates <= {0.5 / 2**k for k in range(12)}, rates
    # each kept event stands for 1/rate samples: the weighted count is the true count
    weighted = pc.sum(pc.divide(1.0, events["sample_rate"])).as_py()
    assert weighted == pytest.approx(run["count"], rel=0.05)
    assert {r["name"] for r in rows} == {"connect", "paced msg", "plain"}
    failures = next(r for r in rows if r["name"] == "paced msg")["failures"]
    assert failures > 0  # every 97th synthetic echo is a mismatch


@pytest.mark.timeout(60)
def test_processes_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "procs"
    run_dir.mkdir()
    argv = _headless(run_dir, "--processes", "2", "-u", "4", "-r", "4")
    assert _wait(_locust(argv, tmp_path, "processes"), 45) == 0
    _check_consistent(run_dir, run_dir / "locust.json")
    run = read_run(run_dir)
    assert run["status"] == "complete" and len(run["workers"]) == 2


def _long_run(
    tmp_path: Path, name: str, parts_wanted: int = 1, busy_marker: Path | None = None
) -> tuple[Path, procs.Proc, procs.Proc]:
    """A 60 s master + 1 worker run, returned once the master has written ``parts_wanted``
    event parts (one per report interval) — or, with ``busy_marker``, once the master has
    started computing for 3 s inside its report handling (``tests/locustfiles/synthetic.py``)."""
    run_dir = tmp_path / name
    run_dir.mkdir()
    port = _free_port()
    master = _locust(
        commands.master_argv(
            SYNTHETIC,
            expect_workers=1,
            users=3,
            spawn_rate=3,
            run_time="60s",
            results_dir=str(run_dir),
            bind_port=port,
            extra=["--json-file", str(run_dir / "locust"), "--exit-code-on-error", "0"],
            python=procs.PYTHON,
        ),
        tmp_path,
        "master",
        extra_env={"ECHOSWARM_TEST_BUSY_MASTER": str(busy_marker)} if busy_marker else None,
    )
    worker = _locust(
        commands.worker_argv(SYNTHETIC, master_port=port, python=procs.PYTHON), tmp_path, "w"
    )
    parts = run_dir / "events.parts"
    deadline = epoch_ns() + 40_000_000_000

    def ready() -> bool:
        if busy_marker is not None:
            return busy_marker.exists()
        return len(list(parts.glob("part-*.arrow"))) >= parts_wanted

    while not ready():
        if master.popen.poll() is not None or epoch_ns() > deadline:
            master.stop()
            worker.stop()
            raise AssertionError("no event parts written: " + master.stderr_text()[-2000:])
        try:
            master.popen.wait(timeout=0.2)  # a bounded wait for the next poll, not a sleep
        except subprocess.TimeoutExpired:
            pass
    return run_dir, master, worker


@pytest.mark.timeout(60)
def test_killed_master_leaves_a_readable_directory(tmp_path: Path) -> None:
    # two intervals: the interval logs hold seconds back a few seconds for late reports
    run_dir, master, worker = _long_run(tmp_path, "killed", parts_wanted=2)
    try:
        killed_at = epoch_ns()
        master.popen.send_signal(signal.SIGKILL)
        master.popen.wait(timeout=10)
    finally:
        master.stop()
        worker.stop(signal.SIGTERM)
    run = read_run(run_dir)
    assert run["status"] == "running"  # never finalized, and says so
    rows = read_summary(run_dir)
    events = read_events(run_dir)
    assert events.num_rows > 0 and sum(r["count"] for r in rows) > 0
    last_end = pc.max(pc.add(events["start_ns"], events["latency_ns"])).as_py()
    assert killed_at - last_end < 10e9, "more than the last few seconds were lost"
    assert load_histograms(run_dir)[("synth", "paced msg")].get_total_count() > 0
    loaded = analysis.load(run_dir)  # the analysis side reads the unfinished run too
    assert loaded.status == "running" and len(loaded.events) == events.num_rows
    assert not loaded.timeline.empty


@pytest.mark.timeout(60)
@pytest.mark.parametrize("moment", ["between reports", "while the master handles a report"])
def test_ctrl_c_on_the_master_collects_the_workers_last_reports(
    tmp_path: Path, moment: str
) -> None:
    # Stock Locust raises KeyboardInterrupt in whichever greenlet runs when SIGINT lands. In
    # the master's handling of a report it killed client_listener (a traceback, the worker then
    # "missing", its last report lost, exit 2); in its receive it was dropped and the master ran
    # on to its -t (seen once in CI).
    busy = tmp_path / "busy" if moment != "between reports" else None
    run_dir, master, worker = _long_run(tmp_path, "interrupted", busy_marker=busy)
    try:
        master.popen.send_signal(signal.SIGINT)
        assert master.popen.wait(timeout=30) == 0, master.stderr_text()[-2000:]
        assert worker.popen.wait(timeout=20) == 0, worker.stderr_text()[-2000:]
    finally:
        master.stop()
        worker.stop()
    _check_consistent(run_dir, run_dir / "locust.json")
    run = read_run(run_dir)
    # everything collected, but cut short of its 60 s: interrupted, not complete
    assert run["status"] == "interrupted" and run["workers"][0]["final_report"]
    assert run["ended_by"] == "shutdown" and run["planned_duration_s"] == 60
