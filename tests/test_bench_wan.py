"""Smoke test of ``python -m bench wan``: it runs end to end in a tiny configuration and prints a
figure in every row (not a timing assertion: the figures are the benchmark's business)."""

from __future__ import annotations

import re
import subprocess

import pytest

from bench.wan import TIMER_KINDS
from tests import procs


@pytest.mark.slow
@pytest.mark.timeout(110)
def test_quick_wan_bench_prints_every_row() -> None:
    proc = subprocess.run(
        [procs.PYTHON, "-m", "bench", "wan", "--quick", "--wan-seconds", "1", "--wan-streams", "8"],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=procs.ROOT,
        env=procs.env(),
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for kind in TIMER_KINDS:  # wake-ups, then late p50 in µs
        assert re.search(rf"^{re.escape(kind)}\s+\d+\s+\d+\.\d\s", out, re.M), out
    for mode in ("timerfd", "poll"):
        for streams in (0, 8):  # direct p50 ... CPU per echo (wan, server), the wan's lateness
            num = r"\d+\.\d{3}"
            cpu = r"\d+\.\d\s+\d+\.\d"
            row = rf"^{mode}\s+{streams} \|\s+{num}\s.*\|\s+{cpu} \|\s+\d+\s+\d+$"
            assert re.search(row, out, re.M), f"no figures for {mode}/{streams}:\n{out}"
