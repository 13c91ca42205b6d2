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
        (["run", "{f}", "-u", "many"], "'many' is not an integer"),
        (["frobnicate"], "invalid choice"),
        (["run", "{f}", "--config", "missing.toml"], "config file not found"),
        (["run", "{f}", "--wan", "rtt=fast"], "--wan: bad rtt 'fast'"),
        (["run", "{f}", "--wan", "jitter=2ms"], "'jitter=2ms': rtt is required"),
        (["run", "{f}", "--wan", "rtt=20ms,loss=1%"], "unknown key 'loss'"),
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


# -- Issue 11 item 8: every numeric flag has a bound ---------------------------------------------
@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["run", "{f}", "--workers", "100000"], "100000 is outside 1..256"),
        (["demo", "--workers", "100000"], "100000 is outside 1..256"),
        (["run", "{f}", "-u", "1000000000"], "1000000000 is outside 1..1000000"),
        (["run", "{f}", "-r", "nan"], "'nan' is not a finite number"),
        (["run", "{f}", "-r", "inf"], "'inf' is not a finite number"),
        (["run", "{f}", "-r", "0"], "0 is outside (0, 100000]"),
        (["run", "{f}", "--web-port", "70000"], "70000 is outside 1..65535"),
        (["run", "{f}", "-t", "100h"], "outside 1s..24h"),
        (["run", "{f}", "-t", "0"], "outside 1s..24h"),
        (["run", "{f}", "--master-timeout-s", "0"], "0 is outside 1..3600 s"),
        (["run", "{f}", "--config", "{conf}"], "workers in the config file: 100000 is outside"),
    ],
)
def test_numbers_out_of_bounds_are_one_line_exit_2(
    scenario: Path, tmp_path: Path, args: list[str], why: str
) -> None:
    conf = tmp_path / "big.toml"
    conf.write_text("[run]\nworkers = 100000\n")
    results = tmp_path / "results"
    argv = [a.replace("{f}", str(scenario)).replace("{conf}", str(conf)) for a in args]
    proc = _run(*argv, "--results", str(results))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and why in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not results.exists()  # nothing started, nothing created


# -- Issue 11 item 9: bad files and paths are one line, not a traceback --------------------------
def test_non_utf8_config_is_one_line(scenario: Path, tmp_path: Path) -> None:
    conf = tmp_path / "echoswarm.toml"
    conf.write_bytes(b"[run]\nworkers = 2 # caf\xe9\n")
    proc = _run("run", str(scenario), "--config", str(conf))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "not UTF-8 text (byte 0xe9" in proc.stderr


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_non_utf8_locustfile_is_one_line(tmp_path: Path, command: str) -> None:
    f = tmp_path / "latin1.py"
    f.write_bytes(b'# caf\xe9\nECHOSWARM_SERVERS = [{"kind": "tcp", "option": "--tcp-target"}]\n')
    proc = _run(command, str(f), "--results" if command == "run" else "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "not readable as Python source (byte 0xe9 at offset 5 is not UTF-8)" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_unbuildable_server_declaration_is_one_line(tmp_path: Path, command: str) -> None:
    f = tmp_path / "odd.py"
    f.write_text("ECHOSWARM_SERVERS = [{[]: 1}]\n")
    proc = _run(command, str(f))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "ECHOSWARM_SERVERS must be a literal list of dicts" in proc.stderr


def test_results_directory_that_cannot_be_made_is_one_line() -> None:
    proc = _run("run", "tests/locustfiles/tcp_echo.py", "--results", "/proc/nope/run")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot create the results directory /proc/nope/run" in proc.stderr
    assert proc.stdout == ""


def test_sweep_directory_that_cannot_be_made_is_one_line() -> None:
    proc = _run("sweep", "locustfiles/tcp_churn.py", "--out", "/proc/nope/sweep")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot create the results directory /proc/nope/sweep" in proc.stderr


# -- Issue 11 item 10: a file without Locust users ---------------------------------------------
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_plain_python_file_is_one_line_and_creates_nothing(tmp_path: Path, command: str) -> None:
    f = tmp_path / "plain.py"
    f.write_text('ECHOSWARM_SERVERS = [{"kind": "tcp", "option": "--tcp-target"}]\nX = 1\n')
    out = tmp_path / "out"
    proc = _run(command, str(f), "--results" if command == "run" else "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "defines no Locust User class" in proc.stderr
    assert not out.exists() and proc.stdout == ""


def test_bad_scenario_argument_is_refused_before_start(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run(
        "run", "locustfiles/audio_stream.py", "--results", str(out), "--", "--transports", "x"
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "locust: argument --transports: unknown transport 'x'" in proc.stderr
    assert not out.exists()
