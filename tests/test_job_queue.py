"""S004 end to end: ``python -m echoswarm sweep locustfiles/job_queue.py`` in a short form
(real jobs server, Redis, rq workers, Locust master and worker per cell), and its usage errors.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from echoswarm.results import read_summary
from echoswarm.sweep import cli as sweep
from tests import procs
from tests.conftest import require_tool

JOB_QUEUE = "locustfiles/job_queue.py"


@pytest.mark.timeout(120)
def test_short_sweep_inline_vs_queue_has_a_checked_row_per_cell(tmp_path: Path) -> None:
    require_tool("redis-server")
    out = tmp_path / "sweep"
    proc = subprocess.run(
        [
            procs.PYTHON, "-m", "echoswarm", "sweep", JOB_QUEUE, "--quick",
            "--queue-workers", "0,1", "--uploads", "3", "--job-cpu-ms", "50", "--out", str(out),
        ],
        cwd=procs.ROOT,
        env=procs.env(),
        capture_output=True,
        text=True,
        timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with (out / "sweep.csv").open() as f:
        rows = {int(r["workers"]): r for r in csv.DictReader(f)}
    assert set(rows) == {0, 1}
    for workers, r in rows.items():
        assert r["status"] == "done" and r["answered"] == "3/3" and r["errors"] == "0", r
        first, slowest, p50 = float(r["first_s"]), float(r["slowest_s"]), float(r["p50_s"])
        assert 0 < first <= p50 <= slowest <= float(r["all_s"]) + 0.01, r
        summary = {s["name"]: s for s in read_summary(Path(r["results"]))}
        if workers == 0:  # inline: one request per upload, nothing queued
            assert set(summary) == {"native"} and summary["native"]["count"] == 3
        else:  # every row of the queue, every job checked and finished
            assert set(summary) == {"submit", "poll", "job", "queue wait", "run"}
            assert all(summary[n]["count"] == 3 for n in ("submit", "job", "queue wait", "run"))
            assert float(r["run_p50_s"]) > 0 and float(r["wait_p50_s"]) >= 0
        assert {s["request_type"] for s in summary.values()} == {"http"}
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    assert [c["server_overrides"]["jobs"] for c in cells] == [
        ["--queue-workers", str(w), "--job-cpu-ms", "50"] for w in (0, 1)
    ]
    table = (out / "sweep.md").read_text()
    assert table.startswith("| uploads | workers | status | answered |")
    assert "- 3 uploads: " in table and "CPU floor on" in table
    assert (out / "sweep.png").stat().st_size > 1000
    assert "| uploads | workers |" in proc.stdout


def test_verdict_compares_each_worker_count_with_inline_over_repeats() -> None:
    import pandas as pd

    from analysis.sweeps import jobs as sweep_jobs

    rows = [  # (rep, uploads, workers, status, all answered after, slowest job)
        (1, 10, 0, "done", 20.0, 19.5),
        (1, 10, 3, "done", 12.0, 11.8),
        (1, 10, 10, "done", 11.0, 10.9),
        (2, 10, 0, "done", 22.0, 21.5),
        (2, 10, 3, "done", 14.0, 13.8),
        (2, 10, 10, "capped", 99.0, 99.0),  # not done: left out of the medians
        (1, 5, 0, "done", 10.0, 10.0),
        (1, 5, 3, "failed", None, None),
    ]
    df = pd.DataFrame(rows, columns=["rep", "uploads", "workers", "status", "all_s", "slowest_s"])
    ten, five = sweep_jobs.verdicts(df, cpu_ms=2000, cpus=2)
    assert ten == (
        "- 10 uploads: the queue finishes sooner (with 3, 10 workers) — all answered after "
        "21.0 s inline (slowest job 20.5 s) vs 13.0 s with 3 workers (1.62× sooner; slowest job "
        "12.8 s), 11.0 s with 10 workers (1.91× sooner; slowest job 10.9 s) (medians of 2 runs); "
        "CPU floor on 2 CPUs 10.0 s."
    )
    assert five == "- 5 uploads: no verdict (needs inline and a queue cell done)."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queue-workers", "0,x"], "'x' is not an integer"),
        (["--queue-workers", "-1"], "-1 is outside 0..256"),
        (["--uploads", "0"], "0 is outside 1.."),
        (["--job-cpu-ms", "fast"], "is not a number"),
        (["--repeat", "0"], "0 is outside 1..100"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sweep.main([JOB_QUEUE, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


# -- on EC2: the server node runs the API, its Redis and the workers ----------------------------
def test_infra_plan_lists_the_jobs_servers_processes() -> None:
    from infra.cli import plan_lines
    from infra.spec import RunSpec, parse_servers

    lines = plan_lines(RunSpec(servers=parse_servers("tcp,jobs")), "ap-northeast-1", "r1")
    (runs,) = [line for line in lines if line.startswith("  server node runs: ")]
    assert "tcp echo server" in runs and "jobs API (uvicorn) + its redis-server" in runs
    assert "rq worker processes and their scheduler" in runs
    assert any("security group servers: tcp 7777, jobs 8000 from workers" in x for x in lines)


def test_server_node_installs_redis_and_runs_the_jobs_server() -> None:
    import json as json_

    from infra import node, userdata

    doc = json_.loads(
        userdata.cloud_config(
            "server",
            "20261201-000000-abcd",
            bucket="b",
            region="ap-northeast-1",
            lifetime_minutes=60,
            expires_epoch=2_000_000_000,
            servers={"tcp": 7777, "jobs": 8000},
        ).removeprefix("#cloud-config\n")
    )
    assert "redis6" in doc["packages"]  # Amazon Linux 2023's Redis (redis6-server)
    units = [f["path"] for f in doc["write_files"]]
    assert "/etc/systemd/system/echoswarm-server-jobs.service" in units
    master = json_.loads(
        userdata.cloud_config(
            "master", "20261201-000000-abcd", bucket="b", region="r", lifetime_minutes=60,
            expires_epoch=2_000_000_000, servers={"jobs": 8000},
        ).removeprefix("#cloud-config\n")
    )  # fmt: skip
    assert "redis6" not in master["packages"]
    argv = node.build_argv(node.parse(["--role", "server", "--kind", "jobs", "--port", "8000"]), {})
    assert argv[1:] == ["-m", "servers", "jobs", "--host", "0.0.0.0", "--port", "8000"]
