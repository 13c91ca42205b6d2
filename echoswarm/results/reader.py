"""Reading a results directory: every reader raises :class:`ResultsError` naming the file.

``summary.csv`` is checked against what ``run.json`` vouches for (see
:mod:`echoswarm.results.writer`): a summary cut at a row boundary or altered is refused; one from
a run that recorded no check is read with a :class:`ResultsWarning`.

A directory still marked ``running`` is judged by :func:`run_state`: its writer alive, or gone
(crashed: the directory is incomplete, and says how much it holds).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from hdrh.histogram import HdrHistogram

from echoswarm import hdr
from echoswarm.results.aggregate import SUMMARY_COLUMNS
from echoswarm.results.events import EVENTS_FILE
from echoswarm.results.events import read_events as _read_events
from echoswarm.results.layout import (
    HIST_DIR,
    HLOG_FILES,
    RUN_JSON,
    SUMMARY_CHECK,
    SUMMARY_CSV,
    ResultsError,
    ResultsWarning,
    boot_id,
    process_start_ticks,
)


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


@dataclass(frozen=True)
class RunState:
    """What a results directory is, beyond its ``status``: ``state`` is

    * ``finished`` — its writer set a final status (complete, partial, interrupted, failed);
    * ``running`` — still ``running`` and its writer is alive (this host), or wrote recently
      (another host: its process cannot be checked from here);
    * ``crashed`` — still ``running`` but its writer is gone: the directory is incomplete, it
      holds what was written up to ``updated_utc``;
    * ``stale`` — still ``running``, written on another host, and silent for longer than
      :data:`STALE_S`: probably crashed, but that cannot be checked from here;
    * ``unknown`` — still ``running`` and written before run.json named its writer.
    """

    state: str
    detail: str
    holds: str  # how much data it holds, e.g. "12,345 samples (0 failed) over 21.0 s, ..."

    @property
    def incomplete(self) -> bool:
        return self.state in ("crashed", "stale", "unknown")

    def describe(self, status: str) -> str:
        if self.state == "finished":
            return status
        return f"{status} — {self.state}: {self.detail}; it holds {self.holds}"


STALE_S = 60.0  # a writer on another host silent this long (20 report intervals) is presumed dead


def run_state(run: dict[str, Any], now_s: float | None = None) -> RunState:
    """Judge a ``run.json`` (from :func:`read_run`) still marked ``running``: is its writer
    alive? (See :class:`RunState`.)"""
    holds = _holds(run)
    if run.get("status") != "running":
        return RunState("finished", "", holds)
    writer = run.get("writer")
    if not isinstance(writer, dict) or not isinstance(writer.get("pid"), int):
        return RunState("unknown", "run.json does not name its writer (an older echoswarm)", holds)
    now = time.time() if now_s is None else now_s
    pid, host = writer["pid"], str(writer.get("host") or "?")
    updated = writer.get("updated_epoch_s")
    when = f"last update {writer.get('updated_utc') or '?'}"
    if isinstance(updated, int | float):
        when += f", {max(0.0, now - updated):.0f} s ago"
    if host == socket.gethostname():
        if writer.get("boot_id") not in (None, boot_id()):
            return RunState(
                "crashed", f"its writer (pid {pid}) ran before this machine rebooted; {when}", holds
            )
        ticks = process_start_ticks(pid)
        if ticks is not None and ticks == writer.get("start_ticks"):
            return RunState("running", f"its writer (pid {pid}) is alive; {when}", holds)
        return RunState(
            "crashed", f"its writer (pid {pid} on {host}) is gone without finalizing; {when}", holds
        )
    if isinstance(updated, int | float) and now - updated <= STALE_S:
        return RunState("running", f"written on {host} (pid {pid}); {when}", holds)
    return RunState(
        "stale",
        f"written on {host} (pid {pid}; another host or boot: cannot be checked from here), "
        f"silent for more than {STALE_S:.0f} s; {when}",
        holds,
    )


def _holds(run: dict[str, Any]) -> str:
    def num(key: str) -> float:
        value = run.get(key)
        return float(value) if isinstance(value, int | float) else 0.0

    check = run.get(SUMMARY_CHECK)
    rows = check.get("rows") if isinstance(check, dict) else None
    return (
        f"{num('count'):,.0f} samples ({num('failures'):,.0f} failed) over "
        f"{num('duration_s'):.1f} s, {rows if rows is not None else '?'} summary rows, "
        f"{num('events_rows_written'):,.0f} event rows"
    )
