"""Test-side helpers: run a locustfile in a child process with :mod:`tests.fakes.local_run`
(Locust as a library) or with the ``locust`` command, and read what came out."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from tests import procs


class S(NamedTuple):
    """One sample as the harness prints it."""

    type: str
    name: str
    latency_ns: int
    error: str | None
    seq: int
    conn_id: int
    lag_ns: int
    start_ns: int
    user_id: int
    nbytes: int

    @property
    def ms(self) -> float:
        return self.latency_ns / 1e6


@dataclass
class Result:
    samples: list[S]
    stats: dict[str, dict[str, int]]
    errors: int
    quit_took: float
    stderr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def rows(self, type_: str, name: str) -> list[S]:
        return [s for s in self.samples if s.type == type_ and s.name == name]

    def ok(self, type_: str, name: str) -> list[S]:
        return [s for s in self.rows(type_, name) if s.error is None]

    def failures(self, type_: str | None = None, name: str | None = None) -> Counter[str]:
        return Counter(
            s.error
            for s in self.samples
            if s.error is not None
            and (type_ is None or s.type == type_)
            and (name is None or s.name == name)
        )

    def p50_ms(self, type_: str, name: str) -> float:
        return statistics.median(s.ms for s in self.ok(type_, name))

    def names(self) -> set[tuple[str, str]]:
        return {(s.type, s.name) for s in self.samples}

    def per_stream(self, type_: str, name: str) -> dict[int, list[S]]:
        out: dict[int, list[S]] = {}
        for s in self.rows(type_, name):
            out.setdefault(s.conn_id, []).append(s)
        return out


def _command(
    locustfile: str, users: int, seconds: float, opts: list[str], classes: str
) -> list[str]:
    argv = [procs.PYTHON, "-m", "tests.fakes.local_run", locustfile, "-u", str(users)]
    argv += ["-t", str(seconds)]
    if classes:
        argv += ["--classes", classes]
    return [*argv, "--", *opts]


def _parse(stdout: str, stderr: str) -> Result:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("{"), f"harness printed no result; stderr:\n{stderr}"
    data = json.loads(lines[-1])
    return Result(
        samples=[S(*row) for row in data["samples"]],
        stats=data["stats"],
        errors=data["errors"],
        quit_took=data["quit_took"],
        stderr=stderr,
        extra={"loop_gaps": data["loop_gaps"]},
    )


def local_run(
    locustfile: str,
    users: int,
    seconds: float,
    *opts: str,
    classes: str = "",
    timeout: float = 60.0,
) -> Result:
    """Run ``users`` users for ``seconds`` in-process (Environment + LocalRunner) in a child."""
    with tempfile.TemporaryDirectory() as results:
        done = subprocess.run(
            _command(locustfile, users, seconds, [*opts, "--results-dir", results], classes),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=procs.ROOT,
            env=procs.env(),
        )
    assert done.returncode == 0, f"harness exited {done.returncode}; stderr:\n{done.stderr}"
    return _parse(done.stdout, done.stderr)


class LiveRun:
    """A harness run in the background: wait for STARTED, poke the servers, then collect."""

    def __init__(
        self, tmp_path: Path, locustfile: str, users: int, seconds: float, *opts: str
    ) -> None:
        results = str(tmp_path / "results")
        self.proc = procs.start(
            _command(locustfile, users, seconds, [*opts, "--results-dir", results], ""),
            tmp_path=tmp_path,
            wait_listening=False,
        )

    def wait_started(self, timeout: float = 30.0) -> None:
        seen = []
        for _ in range(20):  # a library may print a line or two first
            line = procs.read_line(self.proc.popen, timeout)
            if line.strip() == "STARTED" or not line:
                break
            seen.append(line)
        assert line.strip() == "STARTED", f"got {seen!r}; stderr:\n{self.proc.stderr_text()}"

    def result(self, timeout: float = 60.0) -> Result:
        assert self.proc.popen.stdout is not None
        rc = self.proc.popen.wait(timeout=timeout)
        out = self.proc.popen.stdout.read()
        stderr = self.proc.stderr_text()
        self.proc.stop()
        assert rc == 0, f"harness exited {rc}; stderr:\n{stderr}"
        return _parse(out, stderr)


def locust_headless(
    locustfile: str,
    users: int,
    run_time: str,
    *opts: str,
    csv_prefix: Path,
    timeout: float = 90.0,
) -> tuple[subprocess.CompletedProcess[str], dict[tuple[str, str], dict[str, str]]]:
    """``python -m locust -f ... --headless``; returns the process and the rows of the run's
    ``summary.csv`` (merged HDR figures; columns count, failures, p50_ms, bytes, ...) keyed by
    (request_type, name)."""
    argv = [procs.PYTHON, "-m", "locust", "-f", locustfile, "--headless", "-u", str(users)]
    # (no --csv: Locust's CSV writer greenlet can race its own shutdown under --processes and
    # print a traceback; the run's summary.csv is what we read)
    argv += ["-r", str(users), "-t", run_time, "--only-summary"]
    argv += [*opts, "--results-dir", f"{csv_prefix}-results"]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=procs.ROOT, env=procs.env()
    )
    rows: dict[tuple[str, str], dict[str, str]] = {}
    summary = Path(f"{csv_prefix}-results") / "summary.csv"
    if summary.exists():
        with summary.open() as f:
            for row in csv.DictReader(f):
                rows[(row["request_type"], row["name"])] = row
    return done, rows
