"""The results directory (DESIGN.md "Results directory"; docs/ARCHITECTURE.md section 4).

:class:`ResultsWriter` is used by the master (or the local runner) only. It writes everything
incrementally — ``run.json`` at start with ``status: running``, then every report interval the
closed seconds of the interval logs, a Parquet part of the new events, ``summary.csv`` and
``live.json`` — and finalizes at quit (``status: complete`` or ``partial``, events consolidated).
Every whole-file write goes through a temporary file and a rename, and the logs are append-only,
so a killed master leaves a readable directory.

``summary.csv`` is vouched for by ``run.json``: ``"summary_csv": {"rows": N, "sha256": "...",
"previous": {...} | null}``. Each time the writer replaces the summary it first writes
``run.json`` announcing the new one (keeping the one still on disk as ``previous``), then renames
the new summary into place; at the end it drops ``previous`` and sets the final ``status`` only
once the final summary is in place. So at every instant — and after a kill at any point — the
summary on disk is one that ``run.json`` vouches for, and a finished run's only the final one.
:func:`read_summary` checks the file against it: a summary cut at a row boundary (which still
parses) or changed after the run (a torn copy, a hand edit) is refused with a
:class:`ResultsError` instead of being read as the whole table. A directory written before these
fields existed is read with a :class:`ResultsWarning` (it cannot be checked).

The read helpers (:func:`read_run`, :func:`read_summary`, :func:`load_histograms`,
:func:`read_intervals`, :func:`read_events`) raise :class:`ResultsError` naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import re
import socket
import subprocess
import time
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
from hdrh.histogram import HdrHistogram

from echoswarm import hdr
from echoswarm.results_events import EVENTS_FILE, PartWriter, consolidate
from echoswarm.results_events import read_events as _read_events
from echoswarm.results_merge import EXTRA_COLUMNS, SUMMARY_COLUMNS, Aggregate

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
__all__ = [
    "EVENTS_FILE",
    "EXTRA_COLUMNS",
    "SUMMARY_COLUMNS",
    "ResultsError",
    "ResultsWarning",
    "ResultsWriter",
    "default_run_dir",
    "load_histograms",
    "read_events",
    "read_intervals",
    "read_run",
    "read_summary",
]


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


def summary_csv_bytes(rows: list[dict[str, Any]]) -> tuple[bytes, dict[str, Any]]:
    """The bytes of ``summary.csv`` for these rows, and what ``run.json`` records of them."""
    columns = SUMMARY_COLUMNS + EXTRA_COLUMNS
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(columns)
    for row in rows:
        w.writerow([_csv_cell(row[c]) for c in columns])
    data = buf.getvalue().encode()
    return data, {"rows": len(rows), "sha256": hashlib.sha256(data).hexdigest()}


def _csv_cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}" if abs(v) >= 1e5 else f"{v:.4f}"
    return v


class ResultsWriter:
    """Owns one run directory; see the module docstring for what is written when."""

    # Seconds younger than this stay in memory so late worker reports land in the same interval.
    HOLD_S = 5

    def __init__(
        self,
        run_dir: Path,
        meta: dict[str, Any],
        start_epoch_s: float,
        offload: Callable[..., Any] | None = None,
    ) -> None:
        """``offload(fn, args)`` runs the Parquet part writes elsewhere (the plugin passes gevent's
        native-thread pool: pyarrow releases the GIL, so the event loop keeps running)."""
        self._offload = offload
        self.dir = run_dir
        self.start_epoch_s = start_epoch_s
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / HIST_DIR).mkdir(exist_ok=True)
        self.meta: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "status": "running",
            "start_utc": utc_iso(start_epoch_s),
            "start_epoch_s": start_epoch_s,
            "end_utc": None,
            **meta,
        }
        self._logs = {
            kind: hdr.IntervalLogWriter(
                self.dir / HIST_DIR / name, start_epoch_s, f"echoswarm {kind} (microseconds)"
            )
            for kind, name in HLOG_FILES.items()
        }
        self.parts = PartWriter(self.dir)
        self.finalized = False
        # Readers of a run that has only just started see an empty table, not a missing file.
        self._replace_summary([])

    def update(
        self,
        agg: Aggregate,
        now_s: float,
        duration_s: float,
        live: dict[str, Any],
        run_fields: dict[str, Any],
    ) -> None:
        """One report interval's worth of incremental writes."""
        self._write_intervals(agg, int(now_s) - self.HOLD_S)
        batches = agg.take_batches()
        if self._offload is not None and batches:
            self._offload(self.parts.write, (batches,))
        else:
            self.parts.write(batches)
        self.meta.update(run_fields)
        self.meta["events_rows_written"] = self.parts.rows
        self._replace_summary(agg.summary(duration_s))
        write_json_atomic(self.dir / LIVE_JSON, live)

    def finalize(
        self,
        agg: Aggregate,
        now_s: float,
        duration_s: float,
        live: dict[str, Any],
        run_fields: dict[str, Any],
        status: str,
    ) -> None:
        if self.finalized:
            return
        self._write_intervals(agg, None)
        for log in self._logs.values():
            log.close()
        self.parts.write(agg.take_batches())
        rows = consolidate(self.dir)
        self.meta.update(run_fields)
        self._replace_summary(agg.summary(duration_s))
        # the final status only once the final summary is in place, and no other accepted
        self.meta[SUMMARY_CHECK]["previous"] = None
        self.meta.update(
            status=status, end_utc=utc_iso(now_s), end_epoch_s=now_s, events_rows_written=rows
        )
        write_json_atomic(self.dir / RUN_JSON, self.meta)
        write_json_atomic(self.dir / LIVE_JSON, live)
        self.finalized = True

    def _replace_summary(self, rows: list[dict[str, Any]]) -> None:
        """run.json announces the new summary (the one on disk stays acceptable as
        ``previous``), then the summary is renamed into place: a reader, or a kill, between the
        two finds a summary run.json vouches for."""
        data, check = summary_csv_bytes(rows)
        on_disk = self.meta.get(SUMMARY_CHECK)
        previous = {k: on_disk[k] for k in ("rows", "sha256")} if on_disk else None
        tmp = self.dir / (SUMMARY_CSV + ".tmp")
        tmp.write_bytes(data)
        self.meta[SUMMARY_CHECK] = {**check, "previous": previous}
        write_json_atomic(self.dir / RUN_JSON, self.meta)
        os.replace(tmp, self.dir / SUMMARY_CSV)

    def _write_intervals(self, agg: Aggregate, before_sec: int | None) -> None:
        for row, kind, sec, h in agg.take_intervals(before_sec):
            self._logs[kind].write(row, float(sec), 1.0, h)
        for log in self._logs.values():
            log.flush()


# -- reading ------------------------------------------------------------------------------
def _need_dir(run_dir: Path | str) -> Path:
    path = Path(run_dir)
    if not path.exists():
        raise ResultsError(f"{path}: no such results directory")
    if not path.is_dir():
        raise ResultsError(f"{path}: not a directory")
    return path


def read_run(run_dir: Path | str) -> dict[str, Any]:
    path = _need_dir(run_dir) / RUN_JSON
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing (not an echoswarm results directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: unreadable or corrupt JSON ({exc})") from None
    if not isinstance(data, dict) or "status" not in data:
        raise ResultsError(f"{path}: not an echoswarm run.json (no 'status')")
    return data


def read_summary(run_dir: Path | str) -> list[dict[str, Any]]:
    """``summary.csv`` rows: counts as int, the other numbers as float (NaN when empty).

    Checked against ``run.json`` first (see the module docstring): a summary that is not one the
    run wrote raises :class:`ResultsError`; one from a run that recorded no check is read with a
    :class:`ResultsWarning`.
    """
    path = _need_dir(run_dir) / SUMMARY_CSV
    run = read_run(run_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing") from None
    except OSError as exc:
        raise ResultsError(f"{path}: unreadable ({exc})") from None
    problem = _summary_problem(path, data, run.get(SUMMARY_CHECK))
    if problem is not None:
        raise ResultsError(problem)
    return _parse_summary(path, data)


def _summary_problem(path: Path, data: bytes, check: Any) -> str | None:
    """Why ``data`` is not a summary ``run.json`` vouches for (None when it is)."""
    if check is None:
        warnings.warn(
            f"{path}: run.json records no row count or checksum for it (written by an older "
            "echoswarm): a cut or altered file cannot be detected",
            ResultsWarning,
            stacklevel=3,
        )
        return None
    previous = check.get("previous") if isinstance(check, dict) else None
    if not (
        isinstance(check, dict)
        and isinstance(check.get("rows"), int)
        and isinstance(check.get("sha256"), str)
        and (previous is None or isinstance(previous, dict))
    ):
        return f"{path.parent / RUN_JSON}: corrupt ({SUMMARY_CHECK!r} is not {{rows, sha256}})"
    digest = hashlib.sha256(data).hexdigest()
    if digest == check["sha256"] or (previous is not None and digest == previous.get("sha256")):
        return None  # previous: the writer is (or was killed) between run.json and the rename
    try:
        found = max(0, len(list(csv.reader(io.StringIO(data.decode(errors="replace"))))) - 1)
    except csv.Error:
        found = -1
    rows = check["rows"]
    if not data.endswith(b"\n"):
        return f"{path}: cut short: it ends inside a row (run.json records {rows} rows)"
    if found != rows:
        what = f"{found} data row{'s' * (found != 1)}" if found >= 0 else "unparsable"
        return f"{path}: cut short or altered: {what} where run.json records {rows}"
    return f"{path}: altered: its sha256 is not the one run.json records ({rows} rows)"


def _parse_summary(path: Path, data: bytes) -> list[dict[str, Any]]:
    try:
        reader = csv.reader(io.StringIO(data.decode(), newline=""))
        header = next(reader, None)
        if header is None or tuple(header[: len(SUMMARY_COLUMNS)]) != SUMMARY_COLUMNS:
            raise ResultsError(f"{path}: corrupt (header is not {','.join(SUMMARY_COLUMNS)})")
        out = []
        for lineno, cells in enumerate(reader, 2):
            if len(cells) != len(header):
                raise ResultsError(f"{path}: corrupt (line {lineno} has {len(cells)} cells)")
            out.append(_typed_summary_row(dict(zip(header, cells, strict=True)), path, lineno))
        return out
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ResultsError(f"{path}: unreadable ({exc})") from None


def _typed_summary_row(raw: dict[str, str], path: Path, lineno: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, text in raw.items():
        if key in ("request_type", "name"):
            row[key] = text
            continue
        try:
            row[key] = (
                int(text)
                if key in ("count", "failures", "bytes", "lag_count")
                else (float(text) if text else math.nan)
            )
        except ValueError:
            raise ResultsError(f"{path}: corrupt (line {lineno}: {key}={text!r})") from None
    return row


def read_intervals(run_dir: Path | str, kind: str = "latency") -> hdr.IntervalLog:
    if kind not in HLOG_FILES:
        raise ValueError(f"unknown histogram kind {kind!r} (expected one of {list(HLOG_FILES)})")
    path = _need_dir(run_dir) / HIST_DIR / HLOG_FILES[kind]
    try:
        return hdr.read_interval_log(path)
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: corrupt ({exc})") from None


def load_histograms(run_dir: Path | str, kind: str = "latency") -> dict[hdr.Row, HdrHistogram]:
    """Whole-run histograms per (request_type, name), merged from the interval log (µs)."""
    return hdr.merge_intervals(read_intervals(run_dir, kind).intervals)


def read_events(run_dir: Path | str) -> pa.Table:
    path = _need_dir(run_dir)
    try:
        return _read_events(path)
    except FileNotFoundError:
        raise ResultsError(f"{path / EVENTS_FILE}: missing") from None
    except (OSError, pa.ArrowException) as exc:
        raise ResultsError(f"{path / EVENTS_FILE}: corrupt ({exc})") from None
