"""`python -m echoswarm run` usage errors: one line on stderr, exit 2, nothing started."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.procs import PYTHON, ROOT, env


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "echoswarm", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env(),
        timeout=60,
    )


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    f = tmp_path / "scenario.py"
    f.write_text('import locust\nECHOSWARM_SERVERS = [{"kind": "tcp", "option": "--tcp-target"}]\n')
    return f


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["run", "nope.py"], "locustfile not found"),
        (["run", "{f}", "--slo", "grpc:bidi msg:p99"], "bad SLO"),
        (["run", "{f}", "--slo", "grpc:bidi msg:p99<3parsecs"], "latency unit"),
        (["run", "{f}", "--workers", "0"], "--workers"),
        (["run", "{f}", "-t", "soon"], "bad run time"),
        (["run", "{f}", "--wrokers", "2"], "unrecognized arguments"),
        (["run", "{f}", "-u", "many"], "invalid int value"),
        (["frobnicate"], "invalid choice"),
        (["run", "{f}", "--config", "missing.toml"], "config file not found"),
    ],
)
def test_usage_errors_are_one_line_exit_2(scenario: Path, args: list[str], why: str) -> None:
    proc = _run(*[a.replace("{f}", str(scenario)) for a in args])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert why in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_malformed_server_declaration_is_a_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.py"
    f.write_text('ECHOSWARM_SERVERS = [{"kind": "smtp", "option": "--x"}]\n')
    proc = _run("run", str(f))
    assert proc.returncode == 2 and "kind must be one of" in proc.stderr
    assert proc.stderr.count("\n") == 1
