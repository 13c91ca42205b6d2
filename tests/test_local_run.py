"""End to end: `python -m echoswarm run` with real servers, a real Locust master and workers.

Each test runs the orchestrator as a subprocess and checks its exit code, the results directory
and that no child process or listening port outlives it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.orchestration import Orchestrate, a_worker, orchestrations, read_json, run_argv
from tests.procs import ROOT, env

pytestmark = pytest.mark.slow


@pytest.fixture
def orchestrate(tmp_path: Path) -> Iterator[Orchestrate]:
    yield from orchestrations(tmp_path)


AUDIO = "locustfiles/audio_stream.py"


_argv = run_argv


def _summary(results: Path) -> dict[tuple[str, str], dict[str, str]]:
    import csv

    with (results / "summary.csv").open() as f:
        return {(r["request_type"], r["name"]): r for r in csv.DictReader(f)}


@pytest.mark.timeout(120)
def test_audio_stream_end_to_end(tmp_path: Path, orchestrate: Orchestrate) -> None:
    results = tmp_path / "run"
    measured = tmp_path / "overhead.json"  # as `python -m bench overhead` saves it
    measured.write_text(
        json.dumps(
            {
                "measured_utc": "2026-12-01T10:00:00Z",
                "transports": {
                    "grpc": {"p50_ms": 0.2, "p99_ms": 4.47, "source": "python -m bench overhead"}
                },
            }
        )
    )
    o = orchestrate(
        _argv(
            results,
            AUDIO,
            *"--workers 2 -u 20 -r 20 -t 10s --slo *:*msg:p99<2s --slo *:*:error_rate<1%".split(),
            "--instrument-overhead",
            str(measured),
        )
    )
    o.wait_for_file(results / "live.json")
    o.children()
    rc = o.wait(90)
    out = o.output()
    assert rc == 0, out
    rows = _summary(results)
    for key in (("grpc", "bidi msg"), ("ws", "msg"), ("tcp", "msg")):
        assert key in rows, f"missing row {key}: {sorted(rows)}"
        assert int(rows[key]["count"]) > 100, rows[key]
        assert int(rows[key]["failures"]) == 0, rows[key]
    for name in ("run.json", "events.parquet", "report.html", "locust_stats.csv"):
        assert (results / name).exists(), name
    run = json.loads((results / "run.json").read_text())
    assert run["status"] == "complete" and run["ended_by"] == "run_time"
    assert run["planned_duration_s"] == 10 and run["cut_short_s"] == 0
    assert run["instrument_overhead"]["grpc"]["p99_ms"] == 4.47
    report = (results / "report.md").read_text()
    assert "grpc: instrument overhead p50 +0.20 ms, p99 +4.47 ms over a lean" in report, report
    assert "PASS" in out and "FAIL" not in out
    o.assert_no_leftovers()

    from analysis import s000 as demo

    table = demo.comparison(results)
    assert list(table["transport"]) == ["grpc", "ws", "tcp"]
    assert (table["failures"] == 0).all() and (table["messages"] > 100).all()
    assert (table["p50_ms"] <= table["p99_ms"]).all() and (table["lag_p99_ms"] >= 0).all()
    assert "steadiest by p99" in demo.render(results)


@pytest.mark.timeout(120)
def test_violated_slo_exits_1(tmp_path: Path, orchestrate: Orchestrate) -> None:
    results = tmp_path / "run"
    o = orchestrate(
        _argv(
            results,
            AUDIO,
            *"--workers 1 -u 3 -t 4s --no-report --slo *:*msg:p50<1us -- --transports tcp".split(),
        )
    )
    rc = o.wait(90)
    assert rc == 1, o.output()
    assert "FAIL" in o.output()
    o.assert_no_leftovers()


@pytest.mark.timeout(120)
def test_a_killed_worker_is_replaced_and_the_load_recovers(
    tmp_path: Path, orchestrate: Orchestrate
) -> None:
    """Issue 11 item 14: SIGKILL one of two workers mid-run → a replacement starts, the master
    rebalances the users onto it, the gap is recorded, the run exits 4 (completed, degraded)."""
    results = tmp_path / "run"
    users, seconds, per_user_s = 20, 16, 10  # audio_stream: one frame per user every 100 ms
    o = orchestrate(
        _argv(
            results,
            AUDIO,
            *f"--workers 2 -u {users} -r {users} -t {seconds}s --no-report".split(),
            *"--master-timeout-s 5 -- --transports tcp".split(),
        )
    )
    o.wait_for(lambda: _elapsed(results) >= 4.0, "4 s of load")
    victim = a_worker(o)
    victim.kill()
    rc = o.wait(90)
    out = o.output()
    assert rc == 4, out
    assert "replaced by worker-" in out and "started worker-" in out
    run = read_json(results / "run.json")
    assert run["status"] == "partial"
    (gap,) = run["gaps"]
    lost = next(w for w in run["workers"] if w["id"] == gap["worker"])
    new = next(w for w in run["workers"] if w["id"] == gap["replacement"])
    assert lost["lost"] and lost["lost_reason"] == "heartbeat missing"
    assert new["samples"] > 0 and not new["lost"]
    assert gap["last_report_utc"] < gap["replacement_connected_utc"]
    assert gap["replacement_connected_utc"] < gap["replacement_first_report_utc"]
    assert gap["last_report_utc"] < gap["detected_lost_utc"] < gap["last_report_utc"] + 10
    assert 0 < gap["gap_s"] < 12 and gap["samples_delivered"] == lost["samples"] > 0
    assert gap["expected_per_s"] > 0.8 * users * per_user_s
    planned = users * per_user_s * seconds
    messages = int(_summary(results)[("tcp", "msg")]["count"])
    # the load recovered: most of what was planned was sent, and the estimate covers the rest
    assert messages >= 0.75 * planned, (messages, planned, gap)
    assert abs(messages + gap["samples_lost_estimate"] - planned) <= 0.15 * planned
    (replacement,) = run["orchestrator"]["workers"]["replacements"]
    assert replacement["lost_pid"] == victim.pid and replacement["lost_exit_code"] == -9
    # the last whole seconds ran at the full rate again
    from analysis import load

    loaded = load(results)
    msg = loaded.timeline[loaded.timeline["name"] == "msg"].sort_values("time")
    # (against this run's own rate before the loss: a loaded machine may run below the plan)
    assert (msg["count"].iloc[-4:-1] >= 0.85 * gap["expected_per_s"]).all(), msg.tail()
    # the report's "Faults and gaps": the gap, the process and its replacement, the reconnects
    from analysis import faults

    assert len(faults.gap_table(loaded)) == 1
    lines = faults.fault_lines(loaded)
    assert any("exited with code -9" in ln and "replaced by worker-" in ln for ln in lines)
    assert any(ln.startswith("tcp connect: ") for ln in lines), lines  # the rebalance
    o.assert_no_leftovers()


def _elapsed(results: Path) -> float:
    try:
        return float(read_json(results / "live.json").get("elapsed_s") or 0.0)
    except (OSError, ValueError):
        return 0.0


@pytest.mark.timeout(120)
def test_sigint_gives_interrupted_results_and_no_orphans(
    tmp_path: Path, orchestrate: Orchestrate
) -> None:
    results = tmp_path / "run"
    o = orchestrate(
        _argv(results, AUDIO, "--workers", "1", "-u", "4", "-t", "60s", "--", "--transports", "tcp")
    )
    o.wait_for_file(results / "live.json")
    o.children()
    o.popen.send_signal(signal.SIGINT)
    rc = o.wait(60)
    assert rc == 130, o.output()
    run = json.loads((results / "run.json").read_text())
    assert run["status"] == "interrupted"
    assert run["orchestrator"]["interrupted_by"] == "SIGINT"
    assert run["planned_duration_s"] == 60 and run["duration_s"] < 30
    assert run["ended_by"] == "shutdown" and run["cut_short_s"] > 30
    assert (results / "summary.csv").exists()
    o.assert_no_leftovers()


@pytest.mark.timeout(120)
def test_killed_orchestrator_leaves_an_interrupted_run(
    tmp_path: Path, orchestrate: Orchestrate
) -> None:
    """Issue 11 item 15: SIGKILL the orchestrator mid-run. Its children get SIGTERM (pdeath);
    the master finalizes — as interrupted, with the planned and the actual duration."""
    results = tmp_path / "run"
    o = orchestrate(
        _argv(results, AUDIO, *"--workers 1 -u 4 -t 30s --no-report -- --transports tcp".split())
    )
    o.wait_for(lambda: _elapsed(results) >= 3.0, "3 s of load")
    o.children()
    o.popen.kill()
    o.popen.wait(timeout=10)
    run_json = results / "run.json"
    deadline = time.monotonic() + 45
    while read_json(run_json)["status"] == "running":  # the master finalizing on SIGTERM
        assert time.monotonic() < deadline, "the master never finalized"
        time.sleep(0.2)  # polling with a deadline
    run = read_json(run_json)
    assert run["status"] == "interrupted", run["status"]
    assert run["planned_duration_s"] == 30 and 2 < run["duration_s"] < 20
    assert run["ended_by"] == "shutdown" and run["cut_short_s"] > 10
    assert run["count"] > 0 and "orchestrator" not in run  # it never got to annotate
    o.assert_no_leftovers_within(30)


@pytest.mark.timeout(120)
def test_wan_run_adds_the_round_trip_to_every_message(
    tmp_path: Path, orchestrate: Orchestrate
) -> None:
    """Issue 13 item 1: --wan rtt=20ms puts one relay in front of every server: each
    transport's message p50 is the round trip plus what loopback takes (under 1 ms here, a few
    on a loaded machine); gRPC's and WebSocket's connect take ≥ 2 × rtt; raw TCP's connect
    cannot be delayed by a user-space relay, and the report says so."""
    results = tmp_path / "run"
    rtt = 20.0
    o = orchestrate(
        _argv(results, AUDIO, *f"--workers 1 -u 3 -r 3 -t 5s --wan rtt={rtt:g}ms".split())
    )
    rc = o.wait(90)
    assert rc == 0, o.output()
    rows = _summary(results)
    for key in (("grpc", "bidi msg"), ("ws", "msg"), ("tcp", "msg")):
        p50 = float(rows[key]["p50_ms"])
        assert rtt <= p50 <= rtt + 8.0, (key, p50)
    for key in (("grpc", "connect"), ("ws", "connect")):
        assert float(rows[key]["min_ms"]) >= 2 * rtt, (key, rows[key])
    assert float(rows[("tcp", "connect")]["max_ms"]) < rtt  # the kernel's handshake
    run = read_json(results / "run.json")
    wan = run["wan"]
    assert wan["spec"] == "rtt=20ms" and wan["rtt_ms"] == rtt and wan["rate_bps"] is None
    assert [p["server"] for p in wan["pairs"]] == ["grpc", "ws", "tcp"]
    assert all(p["listen"] != p["target"] for p in wan["pairs"])
    assert wan["stats"]["connections"] >= 3 and wan["stats"]["bytes_up"] > 0
    assert (results / wan["stats_file"]).is_file()
    report = (results / "report.md").read_text()
    assert "**Network path**: WAN emulated: rtt=20ms" in report
    assert "WAN path rtt=20ms through one user-space relay" in report
    assert "raw TCP's connect row does not include the emulated path" in report
    o.assert_no_leftovers()


@pytest.mark.timeout(120)
def test_dead_server_fails_the_run_fast(tmp_path: Path, orchestrate: Orchestrate) -> None:
    results = tmp_path / "run"
    o = orchestrate(
        _argv(results, AUDIO, *"--workers 1 -u 3 -t 60s --no-report -- --transports tcp".split())
    )
    o.wait_for_file(results / "live.json")
    server = o.child_matching("servers tcp")
    killed_at = time.monotonic()
    server.kill()
    rc = o.wait(60)
    assert rc == 3, o.output()
    assert time.monotonic() - killed_at < 45
    assert "server tcp" in o.output() and "exited with code" in o.output()
    o.assert_no_leftovers()


@pytest.mark.timeout(60)
def test_server_that_cannot_start_fails_with_its_error(tmp_path: Path) -> None:
    lf = tmp_path / "broken.py"
    lf.write_text(
        "import locust\n"
        "from echoswarm.users import TcpUser\n"
        'ECHOSWARM_SERVERS = [{"kind": "tcp", "option": "--tcp-target",'
        ' "args": ["--model", "no-such-model"]}]\n'
        "class Tcp(TcpUser):\n"
        '    pattern = "stream"\n'
    )
    proc = subprocess.run(
        _argv(tmp_path / "run", str(lf)),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 3
    assert "exited with code 2 before listening" in proc.stderr
    # the directory it created says what happened (the master never wrote a run.json)
    run = read_json(tmp_path / "run" / "run.json")
    assert run["status"] == "failed"
    assert "exited with code 2 before listening" in run["failure_reason"]
