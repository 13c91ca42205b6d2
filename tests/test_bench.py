"""Smoke test of ``python -m bench``: it runs end to end in a tiny configuration and prints every
table row with a figure (not a timing assertion: speed targets are the benchmark's business)."""

from __future__ import annotations

import re
import subprocess

import pytest

from bench.cost import CLIENT_LABEL, TRANSPORTS
from tests import procs


def run_bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [procs.PYTHON, "-m", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=procs.ROOT,
        env=procs.env(),
    )


@pytest.mark.timeout(150)
def test_quick_run_prints_every_row() -> None:
    proc = run_bench(
        "--quick",
        "--conns",
        "2",
        "--messages",
        "150",
        "--paced-steps",
        "4",
        "--paced-seconds",
        "0.5",
        "--fidelity-seconds",
        "0.5",
        "--streams",
        "4",
        "--seconds",
        "0.5",
        timeout=140,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    for transport in TRANSPORTS:
        for client in ("c", "ours", "naive"):
            label = re.escape(CLIENT_LABEL[(client, transport)])
            # transport, conns, label, then a CPU figure (a failed cell would read "n/a: why")
            row = re.compile(rf"^{transport}\s+2\s+{label}\s+\d+\.\d+\s", re.M)
            assert row.search(out), f"no figure for {transport}/{client}:\n{out}"
    assert re.search(r"^\s+4\s+\d+\s+20\s+\d+\.\d{3}\s", out, re.M), out  # the paced step row
    assert re.search(r"^capacity: \d+ streams", out, re.M), out
    for transport in TRANSPORTS:
        # the known-delay row: messages, then latency p50 (its value is the benchmark's business)
        assert re.search(rf"^{transport}\s+\d+\s+\d+\.\d{{3}}\s", out, re.M), out
    for transport in TRANSPORTS:  # the overhead table: ours and the reference, with figures
        for client in ("ours", "reference", "ref-epoll"):
            assert re.search(rf"^{transport}\s+{client}\s+\d+\.\d\d\s", out, re.M), out
        assert re.search(rf"^{transport}\s+p50 [+-]", out, re.M), out
    assert "Traceback" not in proc.stderr


def test_usage_error_is_one_line_exit_2() -> None:
    proc = run_bench("--conns", "x", timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "--conns" in proc.stderr


@pytest.mark.timeout(120)
def test_grpc_designs_prints_every_design() -> None:
    proc = run_bench("grpc-designs", "--quick", "--streams", "4", "--seconds", "0.5", timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for design in ("gevent-mode", "thread", "thread-busy", "driver", "reference"):
        # every design answered every message it sent (a failed child would print an error)
        row = re.compile(rf"^{design}\s+\d+\.\d\d\s+\d+\.\d\d\s.*\s0$", re.M)
        assert row.search(proc.stdout), f"no figures for {design}:\n{proc.stdout}"
    assert "error:" not in proc.stdout
