"""What every sweep table needs: the cells of a sweep (``sweep.json``), reading a cell's results,
markdown/CSV output, number format.

Per-row latencies come from the cell's ``summary.csv`` (merged HDR histograms); figures that
need individual records (per-connection sums, first-to-last wall time) come from its
``events.parquet``. A cell that wrote nothing yields empty figures (NaN), never an exception:
its status column says why.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from echoswarm.results import ResultsError, read_events, read_summary
from echoswarm.sweep.done import count as count  # (the tables find rows as the engine does)
from echoswarm.sweep.done import phase as phase

EVENT_COLUMNS = ["worker", "conn_id", "name", "start_ns", "latency_ns", "error", "sample_rate"]


def summary_rows(results: Path) -> dict[str, dict[str, Any]]:
    """The cell's summary rows keyed by name ({} if it has none)."""
    try:
        return {str(r["name"]): r for r in read_summary(results)}
    except ResultsError:
        return {}


def events(results: Path) -> pd.DataFrame:
    """The cell's events (the columns a sweep uses); empty if there are none."""
    try:
        table = read_events(results)
    except ResultsError:
        return pd.DataFrame(columns=EVENT_COLUMNS)
    names = [c for c in EVENT_COLUMNS if c in table.column_names]
    return table.select(names).to_pandas()


def fig(row: dict[str, Any] | None, column: str) -> float:
    """A number from a summary row (NaN when the row or value is missing)."""
    if not row:
        return math.nan
    value = row.get(column)
    return float(value) if value is not None else math.nan


def span_s(ev: pd.DataFrame, first: str, last: str) -> float:
    """Seconds from the earliest start of ``first`` rows to the latest end of ``last`` rows."""
    a = ev[ev["name"] == first]
    b = ev[ev["name"] == last]
    if a.empty or b.empty:
        return math.nan
    end = (b["start_ns"] + b["latency_ns"]).max()
    return float(end - a["start_ns"].min()) / 1e9


def top_error(ev: pd.DataFrame) -> str:
    """The most frequent error text of a cell with its count ("" when there were none)."""
    if ev.empty or "error" not in ev:
        return ""
    errors = ev["error"].dropna()
    if errors.empty:
        return ""
    counts = errors.value_counts()
    return f"{counts.index[0]} ({int(counts.iloc[0])}×)"


def fully_sampled(ev: pd.DataFrame) -> bool:
    """True when every sample was kept as an event (sums per connection are then exact)."""
    return "sample_rate" not in ev or ev.empty or bool((ev["sample_rate"] >= 1.0).all())


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: numbers with a sensible precision, NaN as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown(df: pd.DataFrame, headers: dict[str, str]) -> str:
    """A GitHub markdown table of ``df``'s ``headers`` columns (numbers right-aligned)."""
    cols = list(headers)
    lines = ["| " + " | ".join(headers[c] for c in cols) + " |"]
    align = ["---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in cols]
    lines.append("| " + " | ".join(align) + " |")
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def write_outputs(
    df: pd.DataFrame, sweep_dir: Path, headers: dict[str, str], notes: list[str]
) -> list[Path]:
    """``sweep.csv`` (every column) and ``sweep.md`` (the table, then the notes)."""
    csv_path = sweep_dir / "sweep.csv"
    df.to_csv(csv_path, index=False)
    md_path = sweep_dir / "sweep.md"
    body = markdown(df, headers)
    md_path.write_text(body + "\n\n" + "\n".join(notes).rstrip() + "\n")
    return [csv_path, md_path]


@dataclass(frozen=True)
class CellRun:
    """One cell of a finished sweep, as ``sweep.json`` records it."""

    label: str
    key: dict[str, Any]  # the grid coordinates, e.g. {"model": "epoll", "users": 150}
    users: int
    status: str  # done | capped | partial | failed | interrupted
    wall_s: float
    results: Path


def read_sweep(sweep_dir: Path) -> tuple[dict[str, Any], list[CellRun]]:
    """``sweep.json``: (its ``plan`` with the title, cells in the order they ran)."""
    path = sweep_dir / "sweep.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing (not a sweep directory?)") from None
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: unreadable ({exc})") from None
    plan = dict(data.get("plan") or {}, title=data.get("title", ""))
    cells = []
    fixed = {"label", "users", "status", "exit_code", "wall_s", "time_limit_s", "results"}
    fixed |= {"locust_args", "server_overrides"}
    try:
        for c in data["cells"]:
            key = {k: v for k, v in c.items() if k not in fixed}
            key["users"] = c["users"]
            cells.append(
                CellRun(
                    str(c["label"]),
                    key,
                    int(c["users"]),
                    str(c["status"]),
                    float(c["wall_s"]),
                    Path(c["results"]),
                )  # fmt: skip
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultsError(f"{path}: corrupt ({exc!r})") from None
    return plan, cells
