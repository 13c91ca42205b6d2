"""The benchmark's plumbing: echo servers as subprocesses, the C client build, child runs.

Servers are started the way ``python -m echoswarm run`` starts them
(``echoswarm.orchestrate.supervise`` and ``echoswarm.orchestrate.commands``:
``python -m servers KIND --port 0``, the LISTENING line, always stopped).
Each measurement is a child process that prints one JSON line (the C client, or
``python -m bench.driver``); a child that fails or overruns its deadline gives an ``error`` entry
instead of a number, so one broken row never hides the others.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from echoswarm.orchestrate.commands import server_argv, target_value
from echoswarm.orchestrate.supervise import ChildError, Supervisor

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
C_SOURCE = Path(__file__).resolve().parent / "pingpong.c"


class BenchError(RuntimeError):
    """The benchmark cannot run at all (a server does not start); one line for the user."""


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """``argv`` run on one CPU (``taskset -c``), or unchanged when ``cpu`` is None or taskset
    is missing."""
    taskset = shutil.which("taskset")
    if cpu is None or taskset is None:
        return list(argv)
    return [taskset, "-c", str(cpu), *argv]


def last_cpu() -> int | None:
    """The highest CPU this process may run on (None where affinity is unknown)."""
    try:
        return max(os.sched_getaffinity(0))
    except (AttributeError, OSError, ValueError):
        return None


@contextmanager
def servers(
    kinds: Sequence[str],
    args: dict[str, list[str]] | None = None,
    log_dir: Path | None = None,
    cpu: int | None = None,
) -> Iterator[dict[str, str]]:
    """Start one echo server per kind on ``--port 0`` (on ``cpu`` if given); yields
    {kind: target as users take it}."""
    sup = Supervisor(log_dir or BUILD / "bench-logs", cwd=ROOT)
    targets: dict[str, str] = {}
    try:
        for kind in kinds:
            argv = pinned(server_argv(kind, port=0, args=(args or {}).get(kind, [])), cpu)
            child = sup.start(f"server-{kind}", "server", argv)
            try:
                host, port = sup.wait_listening(child)
            except ChildError as exc:
                raise BenchError(str(exc)) from None
            targets[kind] = target_value(kind, host, port)
        yield targets
    finally:
        sup.stop_all()


def build_c_client() -> tuple[Path | None, str]:
    """Compile ``pingpong.c`` into ``build/`` (when missing or older than the source).

    Returns (binary, "") or (None, why not) — without gcc the C rows read n/a.
    """
    binary = BUILD / "pingpong"
    if binary.exists() and binary.stat().st_mtime >= C_SOURCE.stat().st_mtime:
        return binary, ""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None, "gcc not found"
    BUILD.mkdir(exist_ok=True)
    proc = subprocess.run(
        [gcc, "-O2", "-Wall", "-o", str(binary), str(C_SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["?"])[0]
        return None, f"gcc failed: {first}"
    return binary, ""


def run_json(argv: Sequence[str], timeout_s: float, cpu: int | None = None) -> dict[str, Any]:
    """Run a measuring child; its last stdout line is JSON. Errors become ``{"error": ...}``."""
    return run_json_lines(argv, timeout_s, cpu)[-1]


def run_json_lines(
    argv: Sequence[str], timeout_s: float, cpu: int | None = None
) -> list[dict[str, Any]]:
    """Run a measuring child (on ``cpu`` if given) and return every JSON line it printed (at
    least one entry: an ``{"error": ...}`` one is appended when the child failed or overran
    ``timeout_s``)."""
    argv = pinned(argv, cpu)
    env = dict(os.environ, ECHOSWARM_PARENT_PID=str(os.getpid()), PYTHONUNBUFFERED="1")
    try:
        # Through echoswarm.pdeath: a measuring child dies with the benchmark, even on SIGKILL.
        proc = subprocess.run(
            [sys.executable, "-m", "echoswarm.pdeath", *argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=ROOT,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return _json_lines(out) + [{"error": f"no result within {timeout_s:g} s"}]
    results = _json_lines(proc.stdout)
    if proc.returncode != 0 or not results:
        err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        results.append({"error": (err[-1] if err else f"exit code {proc.returncode}")[:200]})
    return results


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]


def driver_argv(what: str, *args: str) -> list[str]:
    """``python -m bench.driver WHAT ARGS`` with this interpreter."""
    return [sys.executable, "-m", "bench.driver", what, *args]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
