"""``load(run_dir)`` → a :class:`Run`: a results directory as tidy pandas DataFrames.

* ``run`` — the ``run.json`` metadata (dict);
* ``summary`` — ``summary.csv``, one row per (request_type, name);
* ``histograms`` — the HDR percentile spectrum per row (request_type, name, percentile,
  value_ms, count), from the whole-run merged histograms;
* ``timeline`` — per second and row: count, failures, throughput and latency percentiles, from
  the per-second interval histograms;
* ``events`` — ``events.parquet`` (one row per recorded sample; read on first use, since it can
  be large), with epoch-ns timestamps as nullable integers.

Everything that cannot be read raises :class:`ResultsError` naming the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from hdrh.histogram import HdrHistogram

from echoswarm import hdr
from echoswarm import results as res
from echoswarm.results import ResultsError

SUMMARY_INT_COLUMNS = ("count", "failures", "bytes", "lag_count")
TIMELINE_PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_EMPTY = hdr.new_histogram()  # read-only stand-in for "no interval of this kind"


@dataclass
class Run:
    """One results directory, loaded."""

    path: Path
    run: dict[str, Any]
    summary: pd.DataFrame
    latency: dict[hdr.Row, HdrHistogram] = field(repr=False)
    lag: dict[hdr.Row, HdrHistogram] = field(repr=False)
    intervals: dict[str, hdr.IntervalLog] = field(repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return str(self.run.get("status", "unknown"))

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @cached_property
    def state(self) -> res.RunState:
        """Finished, or still running — and then is its writer alive, or did it crash?"""
        return res.run_state(self.run)

    @property
    def status_text(self) -> str:
        """The status, and for a directory whose writer never finished, what it is and holds."""
        return self.state.describe(self.status)

    @property
    def start_s(self) -> float | None:
        value = self.run.get("start_epoch_s")
        return float(value) if value is not None else None

    @property
    def duration_s(self) -> float:
        value = self.run.get("duration_s")
        return float(value) if value is not None else math.nan

    @cached_property
    def events(self) -> pd.DataFrame:
        table = res.read_events(self.path)
        return table.to_pandas(types_mapper=_nullable_ints)

    @cached_property
    def histograms(self) -> pd.DataFrame:
        rows = []
        for (rt, name), h in sorted(self.latency.items()):
            for pct, value_ms, count in hdr.spectrum(h):
                rows.append((rt, name, pct, value_ms, count))
        return pd.DataFrame(
            rows, columns=["request_type", "name", "percentile", "value_ms", "count"]
        )

    @cached_property
    def timeline(self) -> pd.DataFrame:
        return _timeline(self.intervals, self.start_s)

    def rows(self) -> list[hdr.Row]:
        return list(zip(self.summary["request_type"], self.summary["name"], strict=True))


def _nullable_ints(t: pa.DataType) -> Any:
    if pa.types.is_integer(t):
        return pd.Int64Dtype()
    return None


def load(run_dir: str | Path) -> Run:
    """Load a results directory (complete, or partial from a killed run)."""
    path = Path(run_dir)
    run = res.read_run(path)
    summary = pd.DataFrame(res.read_summary(path), columns=list(_summary_columns(path)))
    for col in SUMMARY_INT_COLUMNS:
        if col in summary:
            summary[col] = summary[col].astype("int64")
    intervals = {kind: res.read_intervals(path, kind) for kind in res.HLOG_FILES}
    latency = hdr.merge_intervals(intervals["latency"].intervals)
    lag = hdr.merge_intervals(intervals["lag"].intervals)
    if not (path / res.EVENTS_FILE).is_file() and not (path / "events.parts").is_dir():
        raise ResultsError(f"{path / res.EVENTS_FILE}: missing")
    return Run(path, run, summary, latency, lag, intervals)


def _summary_columns(path: Path) -> list[str]:
    with (path / res.SUMMARY_CSV).open() as f:
        return f.readline().strip().split(",")


def _summed(intervals: list[hdr.Interval]) -> HdrHistogram:
    if not intervals:
        return _EMPTY
    total = intervals[0].histogram()
    for iv in intervals[1:]:
        iv.add_to(total)
    return total


def _timeline(intervals: dict[str, hdr.IntervalLog], start_s: float | None) -> pd.DataFrame:
    # Group first, decode one (row, second) at a time: memory stays flat for long runs.
    groups: dict[tuple[hdr.Row, float], dict[str, list[hdr.Interval]]] = {}
    for kind in ("latency", "failed"):
        for iv in intervals[kind].intervals:
            groups.setdefault((iv.row, iv.start_epoch_s), {}).setdefault(kind, []).append(iv)
    out = []
    for ((rt, name), sec), by_kind in sorted(groups.items()):
        ok = _summed(by_kind.get("latency", []))
        failed = _summed(by_kind.get("failed", []))
        n_ok, n_failed = ok.get_total_count(), failed.get_total_count()
        p = hdr.percentiles_ms(ok, TIMELINE_PERCENTILES)
        out.append(
            {
                "request_type": rt,
                "name": name,
                "time": pd.Timestamp(sec, unit="s", tz="UTC"),
                "t_s": sec + 0.5 - (start_s if start_s is not None else 0.0),  # mid-second
                "count": n_ok + n_failed,
                "failures": n_failed,
                "rps": float(n_ok + n_failed),  # one-second intervals
                "p50_ms": p[50.0],
                "p90_ms": p[90.0],
                "p99_ms": p[99.0],
                "p999_ms": p[99.9],
                "max_ms": ok.get_max_value() / 1000.0 if n_ok else math.nan,
            }
        )
    columns = [
        "request_type",
        "name",
        "time",
        "t_s",
        "count",
        "failures",
        "rps",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
    ]
    return pd.DataFrame(out, columns=columns)
