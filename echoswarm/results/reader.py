"""Reading a results directory: every reader raises :class:`ResultsError` naming the file.

``summary.csv`` is checked against what ``run.json`` vouches for (see
:mod:`echoswarm.results.writer`): a summary cut at a row boundary or altered is refused; one from
a run that recorded no check is read with a :class:`ResultsWarning`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import warnings
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
