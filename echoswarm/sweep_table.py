"""What every sweep table needs: reading a cell's results, markdown/CSV output, number format.

Per-row latencies come from the cell's ``summary.csv`` (merged HDR histograms); figures that
need individual records (per-connection sums, first-to-last wall time) come from its
``events.parquet``. A cell that wrote nothing yields empty figures (NaN), never an exception:
its status column says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from echoswarm.results import ResultsError, read_events, read_summary

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


def count(row: dict[str, Any] | None, column: str = "count") -> int:
    return int(row.get(column) or 0) if row else 0


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


# -- reading rows by phase, and when a cell's load is done -------------------------------------
Rows = dict[str, dict[str, Any]]


def phase(rows: Rows, name: str, prefix: str = "") -> tuple[str, dict[str, Any] | None]:
    """(row name, row) of a phase (``connect``, ``msg``, …) whatever prefix the scenario uses;
    with ``prefix`` only that variant's row (``"serial "`` → ``serial msg``)."""
    if prefix:
        return prefix + name, rows.get(prefix + name)
    for row_name, row in rows.items():
        if row_name == name or row_name.endswith(" " + name):
            return row_name, row
    return name, None


def _keyed(rows: list[dict[str, Any]]) -> Rows:
    return {str(r["name"]): r for r in rows}


def all_connections(expected: int, prefix: str = "") -> Callable[[list[dict[str, Any]]], bool]:
    """Done when ``expected`` connects were attempted and every opened one was closed."""

    def done(rows: list[dict[str, Any]]) -> bool:
        by = _keyed(rows)
        connect, session = phase(by, "connect", prefix)[1], phase(by, "session", prefix)[1]
        attempts = count(connect)
        opened = attempts - count(connect, "failures")
        # A failed connect has no session row, so compare sessions with the opened ones.
        return attempts >= expected and count(session) >= opened

    return done


def all_messages(expected: int, prefix: str = "") -> Callable[[list[dict[str, Any]]], bool]:
    """Done when ``expected`` messages were settled (answered, failed or timed out)."""

    def done(rows: list[dict[str, Any]]) -> bool:
        return count(phase(_keyed(rows), "msg", prefix)[1]) >= expected

    return done
