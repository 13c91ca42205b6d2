"""``python -m echoswarm sweep``: the S003 grid end to end (real servers, master, workers) in a
small --quick form, and its usage errors."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analysis.sweeps import tcp as sweep_tcp
from echoswarm import argtypes
from echoswarm.results import read_summary
from echoswarm.sweep import cli as sweep
from echoswarm.sweep.engine import choice_list
from tests import procs

TCP = "locustfiles/tcp_churn.py"


def sweep_cmd(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [procs.PYTHON, "-m", "echoswarm", "sweep", *args],
        cwd=procs.ROOT,
        env=procs.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(150)
def test_quick_tcp_sweep_has_a_row_and_a_results_dir_per_cell(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    models, users = ["select", "epoll"], [10, 40]
    proc = sweep_cmd(
        TCP,
        "--quick",
        "--models",
        ",".join(models),
        "--users",
        ",".join(map(str, users)),
        "--connections-per-user",
        "2",
        "--round-trips",
        "5",
        "--out",
        str(out),
        timeout=140,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["model"], int(r["users"])) for r in rows) == sorted(
        (m, u) for m in models for u in users
    )
    for r in rows:
        u = int(r["users"])
        assert r["status"] == "done", r
        assert r["connections"] == f"{2 * u}/{2 * u}"
        assert int(r["errors"]) == 0
        assert r["rank"] in {"1", "2"}
        # p50 <= p99 and every latency measured
        for lo, hi in (("connect_p50_ms", "connect_p99_ms"), ("total_p50_ms", "total_p99_ms")):
            assert 0 < float(r[lo]) <= float(r[hi])
        # a connection's send/recv time is the sum of its 5 round trips, within its total
        assert float(r["conn_rt_p50_ms"]) >= 5 * 0.001
        assert float(r["conn_rt_p50_ms"]) <= float(r["total_p99_ms"])
        cell = Path(r["results"])
        assert cell.parent == out and cell.name == f"{r['model']}-u{u}"
        summary = {s["name"]: s for s in read_summary(cell)}
        assert summary["msg"]["count"] == 2 * u * 5
        assert summary["session"]["count"] == 2 * u
        assert json.loads((cell / "run.json").read_text())["status"] == "complete"
    argvs = [c["server_overrides"] for c in json.loads((out / "sweep.json").read_text())["cells"]]
    assert {tuple(a["tcp"]) for a in argvs} == {("--model", m) for m in models}
    table = (out / "sweep.md").read_text()
    assert table.startswith("| users | model | status |")
    for u in users:  # the seed's puzzle, answered per level
        assert f"- {u} users: select total p50 " in table
    assert (out / "sweep.png").stat().st_size > 1000
    assert "| users | model |" in proc.stdout  # the table is printed too


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([TCP, "--models", "asyncio,warp"], "unknown model 'warp'"),
        ([TCP, "--users", "50,x"], "'x' is not an integer"),
        ([TCP, "--users", "0"], "0 is outside 1..1000000"),
        ([TCP, "--users", "1000000000"], "1000000000 is outside 1..1000000"),
        ([TCP, "--workers", "100000"], "100000 is outside 1..256"),
        ([TCP, "--spawn-rate", "inf"], "'inf' is not a finite number"),
        ([TCP, "--repeat", "1000"], "1000 is outside 1..100"),
        ([TCP, "--round-trips", "many"], "is not an integer"),
        ([TCP, "--cell-time", "-1"], "-1 is outside (0, 86400] s"),
        ([TCP, "--bogus"], "unrecognized arguments: --bogus"),
        (["missing.py"], "locustfile not found"),
        ([], "no locustfile given"),
        (["locustfiles/audio_stream.py"], "not a sweep scenario"),
        (["locustfiles/image_frames.py", "--kinds", "serial,burst"], "unknown kind 'burst'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sweep.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m echoswarm sweep: error: ")
    assert message in err


def test_usage_error_from_the_command_line(tmp_path: Path) -> None:
    proc = sweep_cmd(TCP, "--models", "nine", "--out", str(tmp_path / "x"), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "unknown model 'nine'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()  # nothing ran


def test_lists_parse_and_keep_order() -> None:
    assert argtypes.positive_int_list("1000, 50,150,50") == [1000, 50, 150]
    assert choice_list("epoll,select,epoll", ["select", "epoll"], "model") == [
        "epoll",
        "select",
    ]
    assert choice_list("all", ["a", "b"], "x") == ["a", "b"]


def test_select_vs_epoll_verdict_counts_every_repeat() -> None:
    df = pd.DataFrame(
        {
            "users": [150] * 6,
            "rep": [1, 1, 2, 2, 3, 3],
            "model": ["select", "epoll"] * 3,
            "total_p50_ms": [100.0, 120.0, 110.0, 90.0, 105.0, 130.0],
        }
    )
    assert sweep_tcp.select_vs_epoll(df) == [
        "- 150 users: select median total p50 105 ms vs epoll 120 ms — select faster "
        "(epoll faster in 1 of 3 runs)."
    ]
    one = df[df["rep"] == 2]
    assert sweep_tcp.select_vs_epoll(one) == [
        "- 150 users: select total p50 110 ms vs epoll 90.0 ms — epoll faster."
    ]
    assert sweep_tcp.select_vs_epoll(df[df["model"] == "select"]) == []


def test_cells_with_errors_or_capped_rank_after_clean_ones() -> None:
    df = pd.DataFrame(
        {
            "users": [50] * 4,
            "rep": [1] * 4,
            "status": ["done", "done", "capped", "done"],
            "errors": [0, 12, 0, 0],
            "total_p50_ms": [30.0, 5.0, 1.0, 20.0],
        }
    )
    assert sweep_tcp.ranks(df) == ["2", "4*", "3*", "1"]
