"""Comparing two runs: a side-by-side table with ratios and regression flags, and a plot.

Rows are matched on (request_type, name). For latency figures (mean, p50 … max) higher is worse,
for throughput (rps) lower is worse, for the error rate any rise from zero or beyond the
threshold is worse. A change beyond ``threshold`` (a fraction, 0.10 = 10 %) in the worse
direction is a ``regression``, in the better one an ``improvement``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from analysis import plots
from analysis.load import Run
from analysis.summaries import summary_table

METRICS = {  # metric → True when higher is worse
    "rps": False,
    "error_rate": True,
    "mean_ms": True,
    "p50_ms": True,
    "p90_ms": True,
    "p99_ms": True,
    "p999_ms": True,
    "max_ms": True,
}


def verdict(a: float, b: float, higher_is_worse: bool, threshold: float) -> str:
    if math.isnan(a) or math.isnan(b):
        return ""
    if a == 0:
        if b == 0:
            return ""
        return "regression" if higher_is_worse else "improvement"
    ratio = b / a
    if ratio > 1 + threshold:
        return "regression" if higher_is_worse else "improvement"
    if ratio < 1 - threshold:
        return "improvement" if higher_is_worse else "regression"
    return ""


def compare(a: Run, b: Run, threshold: float = 0.10) -> pd.DataFrame:
    """Long table: one row per (request_type, name, metric) with a, b, ratio b/a and a flag."""
    ta = summary_table(a).set_index(["request_type", "name"])
    tb = summary_table(b).set_index(["request_type", "name"])
    keys = sorted(set(ta.index) | set(tb.index))
    out = []
    for key in keys:
        for metric, worse_up in METRICS.items():
            va = _value(ta, key, metric)
            vb = _value(tb, key, metric)
            ratio = vb / va if va and not math.isnan(va) and not math.isnan(vb) else math.nan
            out.append(
                {
                    "request_type": key[0],
                    "name": key[1],
                    "metric": metric,
                    "a": va,
                    "b": vb,
                    "ratio": ratio,
                    "flag": verdict(va, vb, worse_up, threshold),
                }
            )
    return pd.DataFrame(out, columns=["request_type", "name", "metric", "a", "b", "ratio", "flag"])


def _value(table: pd.DataFrame, key: tuple[str, str], metric: str) -> float:
    if key not in table.index:
        return math.nan
    value: Any = table.at[key, metric]
    return float(value)


def regressions(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["flag"] == "regression"].reset_index(drop=True)


WIDE_METRICS = ("rps", "p50_ms", "p99_ms", "p999_ms")


def _short(metric: str) -> str:
    return metric.removesuffix("_ms").replace("p999", "p99.9").replace("error_rate", "errors")


def side_by_side(table: pd.DataFrame, metrics: tuple[str, ...] = WIDE_METRICS) -> pd.DataFrame:
    """One row per (request_type, name): each metric's A, B and B/A, and what was flagged."""
    out = []
    for (rt, name), g in table.groupby(["request_type", "name"], sort=True):
        by_metric = g.set_index("metric")
        row: dict[str, object] = {"request_type": rt, "name": name}
        for m in metrics:
            label = _short(m)
            row[f"{label} A"] = by_metric.at[m, "a"]
            row[f"{label} B"] = by_metric.at[m, "b"]
            row[f"{label} B/A"] = by_metric.at[m, "ratio"]
        worse = [_short(m) for m in g.loc[g["flag"] == "regression", "metric"]]
        better = [_short(m) for m in g.loc[g["flag"] == "improvement", "metric"]]
        row["flags"] = "; ".join(
            [f"worse: {' '.join(worse)}"] * bool(worse)
            + [f"better: {' '.join(better)}"] * bool(better)
        )
        out.append(row)
    return pd.DataFrame(out)


def figure(a: Run, b: Run, label_a: str = "A", label_b: str = "B") -> Figure:
    """Both runs' percentile spectra on one plot (solid = A, dashed = B)."""
    fig = plots.spectrum([(label_a, a), (label_b, b)])
    fig.axes[0].set_title(f"Latency by percentile: {label_a} vs {label_b}")
    return fig
