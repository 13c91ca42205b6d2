"""Summary tables from a loaded run: the per-row table, jitter of paced streams, connect times.

All functions return DataFrames and print nothing. ``format_table`` renders one as aligned text
(for the CLI) and ``markdown_table`` as a Markdown table (for the report).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import Run
from echoswarm import hdr
from echoswarm.results import SUMMARY_COLUMNS

# the contract's columns, with the error rate beside the failures
TABLE_COLUMNS = [*SUMMARY_COLUMNS[:4], "error_rate", *SUMMARY_COLUMNS[4:]]


def summary_table(run: Run) -> pd.DataFrame:
    """Per transport/name: count, failures, error rate, throughput, mean and percentiles (ms)."""
    df = run.summary.copy()
    if "error_rate" not in df:
        df["error_rate"] = df["failures"] / df["count"].where(df["count"] > 0)
    return df.reindex(columns=TABLE_COLUMNS).reset_index(drop=True)


def jitter_table(run: Run) -> pd.DataFrame:
    """Paced streams: how much replies' inter-arrival times deviate from the send schedule.

    For consecutive answered messages of one stream (same worker and conn_id, by seq),
    ``deviation = (received[i] - received[i-1]) - (intended[i] - intended[i-1])``; a perfectly
    steady path gives 0. Reported per row: streams, pairs, mean |deviation|, its stdev, p99
    and max, in ms. Rows without scheduled messages are left out.
    """
    columns = [
        "request_type",
        "name",
        "streams",
        "pairs",
        "jitter_mean_ms",
        "jitter_std_ms",
        "jitter_p99_ms",
        "jitter_max_ms",
        "events_sample_rate",
    ]
    ev = run.events
    if ev.empty:
        return pd.DataFrame(columns=columns)
    paced = ev[ev["intended_ns"].notna() & ev["received_ns"].notna() & ev["error"].isna()]
    out = []
    for (rt, name), g in paced.groupby(["request_type", "name"], sort=True):
        g = g.sort_values(["worker", "conn_id", "seq"])
        same = (g["worker"].diff() == 0) & (g["conn_id"].diff() == 0) & (g["seq"].diff() == 1)
        # differences in integers first: epoch ns do not fit a float64 exactly
        recv = g["received_ns"].diff()
        sched = g["intended_ns"].diff()
        dev = (recv - sched)[same.fillna(False).astype(bool)].to_numpy(dtype=float) / 1e6
        if dev.size == 0:
            continue
        absdev = np.abs(dev)
        out.append(
            {
                "request_type": rt,
                "name": name,
                "streams": int(g.groupby(["worker", "conn_id"]).ngroups),
                "pairs": int(dev.size),
                "jitter_mean_ms": float(absdev.mean()),
                "jitter_std_ms": float(dev.std()),
                "jitter_p99_ms": float(np.percentile(absdev, 99)),
                "jitter_max_ms": float(absdev.max()),
                "events_sample_rate": float(g["sample_rate"].min()),
            }
        )
    return pd.DataFrame(out, columns=columns)


def connect_table(run: Run) -> pd.DataFrame:
    """Connection set-up rows (names ending in ``connect``): count, failures, latency (ms)."""
    df = summary_table(run)
    mask = df["name"].astype(str).str.endswith("connect")
    cols = ["request_type", "name", "count", "failures", "mean_ms", "p50_ms", "p99_ms", "max_ms"]
    return df.loc[mask, cols].reset_index(drop=True)


def lag_table(run: Run) -> pd.DataFrame:
    """Sender lag of scheduled messages (how late the load generator sent them), per row.

    Large lag means the load generator, not the server, was the bottleneck (latency is measured
    from the intended send time, so it is still counted — but the run needs more workers).
    """
    cols = ["request_type", "name", "lag_count", "lag_p50_ms", "lag_p99_ms", "lag_max_ms"]
    df = run.summary.reindex(columns=cols)
    return df[df["lag_count"].fillna(0) > 0].reset_index(drop=True)


def instrument_table(run: Run) -> pd.DataFrame:
    """The instrument's own cost beside the result, per transport (request_type).

    ``sender_lag_*``: how late this run's load generator sent scheduled messages, from the
    merged lag histograms of all the transport's rows (the per-row figures are summary.csv's
    ``lag_p50_ms``/``lag_p99_ms``). ``overhead_*``: from run.json's ``instrument_overhead``
    (``{transport: {"p50_ms", "p99_ms", "source"}}``, measured outside the run by
    ``python -m bench overhead``), when present. Transports with neither are left out.
    """
    columns = [
        "transport",
        "lag_count",
        "sender_lag_p50_ms",
        "sender_lag_p99_ms",
        "overhead_p50_ms",
        "overhead_p99_ms",
        "overhead_source",
    ]
    merged: dict[str, Any] = {}
    for (rt, _name), h in sorted(run.lag.items()):
        if h.get_total_count():
            total = merged.setdefault(rt, hdr.new_histogram())
            total.add(h)
    overhead = instrument_overhead(run)
    out = []
    for transport in sorted(set(merged) | set(overhead)):
        lag = merged.get(transport)
        p = hdr.percentiles_ms(lag, (50.0, 99.0)) if lag is not None else {}
        o = overhead.get(transport, {})
        out.append(
            {
                "transport": transport,
                "lag_count": lag.get_total_count() if lag is not None else 0,
                "sender_lag_p50_ms": p.get(50.0, math.nan),
                "sender_lag_p99_ms": p.get(99.0, math.nan),
                "overhead_p50_ms": o.get("p50_ms", math.nan),
                "overhead_p99_ms": o.get("p99_ms", math.nan),
                "overhead_source": o.get("source", ""),
            }
        )
    return pd.DataFrame(out, columns=columns)


def instrument_overhead(run: Run) -> dict[str, dict[str, Any]]:
    """run.json's ``instrument_overhead``, with malformed entries left out."""
    raw = run.run.get("instrument_overhead")
    if not isinstance(raw, dict):
        return {}
    out = {}
    for transport, entry in raw.items():
        if not isinstance(entry, dict):
            continue
        figures = {k: _float(entry.get(k)) for k in ("p50_ms", "p99_ms")}
        out[str(transport)] = {
            **figures,
            "source": str(entry.get("source") or ""),
            "measured_utc": str(entry.get("measured_utc") or ""),
            "streams": entry.get("streams") if isinstance(entry.get("streams"), int) else None,
        }
    return out


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def totals(run: Run) -> dict[str, Any]:
    df = run.summary
    count = int(df["count"].sum()) if not df.empty else 0
    failures = int(df["failures"].sum()) if not df.empty else 0
    return {
        "count": count,
        "failures": failures,
        "error_rate": failures / count if count else math.nan,
        "rps": count / run.duration_s if run.duration_s and run.duration_s > 0 else math.nan,
    }


def cell(v: Any) -> str:
    if isinstance(v, float | np.floating):
        x = float(v)
        if math.isnan(x):
            return "-"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.4f}" if abs(x) < 0.01 and x != 0 else f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}"
    if isinstance(v, int | np.integer):
        return f"{int(v):,}"
    return str(v)


def format_table(df: pd.DataFrame) -> str:
    """Aligned plain-text table (numbers right-aligned)."""
    if df.empty:
        return "(no rows)"
    header = [str(c) for c in df.columns]
    body = [[cell(v) for v in row] for row in df.itertuples(index=False)]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def markdown_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(no rows)_"
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    sep = (
        "|"
        + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns)
        + "|"
    )
    rows = [
        "| " + " | ".join(cell(v).replace("|", "\\|") for v in r) + " |"
        for r in df.itertuples(index=False)
    ]
    return "\n".join([header, sep, *rows])
