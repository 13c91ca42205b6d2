"""The results directory's layout: file names, errors, run metadata and atomic JSON writes.

Shared by the writer (:mod:`echoswarm.results.writer`, the master or local runner only) and the
readers (:mod:`echoswarm.results.reader`); DESIGN.md "Results directory" fixes the contents.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"
SUMMARY_CSV = "summary.csv"
LIVE_JSON = "live.json"
HIST_DIR = "histograms"
HLOG_FILES = {"latency": "latency.hlog", "failed": "failed.hlog", "lag": "lag.hlog"}
SCHEMA_VERSION = 1
SUMMARY_CHECK = "summary_csv"  # run.json key: {"rows", "sha256", "previous"} of summary.csv
PACKAGES = (
    "locust",
    "gevent",
    "grpcio",
    "websockets",
    "hdrhistogram",
    "pyarrow",
    "pandas",
    "numpy",
)


class ResultsError(Exception):
    """A results directory or one of its files is missing or unreadable (message names it)."""


class ResultsWarning(UserWarning):
    """Something in a results directory could not be checked (message names the file)."""


def utc_iso(epoch_s: float) -> str:
    millis = int(epoch_s % 1 * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_s)) + f".{millis:03d}Z"


def default_run_dir(locustfile: str | None, epoch_s: float, root: str = "results") -> Path:
    """``results/<UTC stamp>-<locustfile stem>``."""
    stem = Path(locustfile).stem if locustfile else "run"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "run"
    return Path(root) / (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch_s)) + f"-{stem}")


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def environment_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "packages": versions,
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux ``/proc/PID/stat`` field
    22): with the pid it names one process, even after the pid is reused. None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after its end
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def writer_identity() -> dict[str, Any]:
    """Who writes a results directory: this process (run.json ``writer``)."""
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "start_ticks": process_start_ticks(pid),
        "boot_id": boot_id(),
    }


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(obj), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
