"""Plots of a loaded run, as matplotlib Figures (no pyplot state; Agg when saved).

``spectrum`` (HDR percentile spectrum, log "nines" axis), ``cdf``, ``latency_over_time``,
``throughput_over_time`` and ``comparison_bars``; ``spectrum`` also takes several labelled runs
for comparisons. :func:`png_bytes` renders a Figure to PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.load import Run

NINES = [0.0, 90.0, 99.0, 99.9, 99.99, 99.999]
SIZE = (9.0, 4.8)


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=SIZE, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _plain_log(axis: Any) -> None:
    # "3" and "200" instead of matplotlib's default "3×10⁰" on log axes
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if str(v)[0] in "25" else ""))


def _no_data(ax: Axes, what: str) -> None:
    ax.text(
        0.5,
        0.5,
        f"no {what} in this run",
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=12,
        color="0.4",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _label(rt: str, name: str) -> str:
    return f"{rt} {name}"


def spectrum(runs: Run | Sequence[tuple[str, Run]]) -> Figure:
    """Latency by percentile, x = 1/(1-p) on a log axis (HdrHistogram's classic plot)."""
    labelled = [("", runs)] if isinstance(runs, Run) else list(runs)
    fig, ax = _figure()
    plotted = False
    styles = ["-", "--", ":", "-."]
    colors: dict[tuple[str, str], str] = {}  # one color per row, one line style per run
    for i, (prefix, run) in enumerate(labelled):
        df = run.histograms
        for (rt, name), g in df.groupby(["request_type", "name"], sort=True):
            g = g[g["percentile"] < 100.0]
            if g.empty:
                continue
            x = 1.0 / (1.0 - g["percentile"].to_numpy() / 100.0)
            label = (f"{prefix}: " if prefix else "") + _label(str(rt), str(name))
            color = colors.setdefault((str(rt), str(name)), f"C{len(colors) % 10}")
            ax.plot(x, g["value_ms"].to_numpy(), styles[i % len(styles)], color=color, label=label)
            plotted = True
    if not plotted:
        _no_data(ax, "latencies")
        return fig
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log(ax.yaxis)
    ticks = [1.0 / (1.0 - p / 100.0) for p in NINES]
    ax.set_xticks(ticks, [f"{p:g}%" for p in NINES])
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency by percentile (merged HDR histograms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def cdf(run: Run) -> Figure:
    fig, ax = _figure()
    df = run.histograms
    if df.empty:
        _no_data(ax, "latencies")
        return fig
    for (rt, name), g in df.groupby(["request_type", "name"], sort=True):
        ax.step(
            g["value_ms"].to_numpy(),
            g["percentile"].to_numpy() / 100.0,
            where="post",
            label=_label(str(rt), str(name)),
        )
    ax.set_xscale("log")
    _plain_log(ax.xaxis)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of samples ≤ latency")
    ax.set_ylim(0, 1.01)
    ax.set_title("Latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def latency_over_time(run: Run) -> Figure:
    """p50 (dashed) and p99 (solid) per second and row."""
    fig, ax = _figure()
    tl = run.timeline
    tl = tl[tl["count"] > tl["failures"]]
    if tl.empty:
        _no_data(ax, "latencies")
        return fig
    for i, ((rt, name), g) in enumerate(tl.groupby(["request_type", "name"], sort=True)):
        color = f"C{i % 10}"
        label = _label(str(rt), str(name))
        ax.plot(g["t_s"], g["p99_ms"], "-", marker=".", color=color, label=f"{label} p99")
        ax.plot(g["t_s"], g["p50_ms"], "--", marker=".", color=color, label=f"{label} p50")
    ax.set_yscale("log")
    _plain_log(ax.yaxis)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency over time (per second)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def throughput_over_time(run: Run) -> Figure:
    fig, ax = _figure()
    tl = run.timeline
    if tl.empty:
        _no_data(ax, "samples")
        return fig
    for i, ((rt, name), g) in enumerate(tl.groupby(["request_type", "name"], sort=True)):
        color = f"C{i % 10}"
        ax.plot(g["t_s"], g["rps"], "-", marker=".", color=color, label=_label(str(rt), str(name)))
        if g["failures"].any():
            ax.plot(
                g["t_s"],
                g["failures"],
                ":",
                color=color,
                label=f"{_label(str(rt), str(name))} failures/s",
            )
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("samples per second")
    ax.set_title("Throughput over time")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def comparison_bars(run: Run) -> Figure:
    """p50 / p90 / p99 / p99.9 per row, side by side (log axis)."""
    fig, ax = _figure()
    df = run.summary.dropna(subset=["p50_ms"])
    if df.empty:
        _no_data(ax, "latencies")
        return fig
    cols = ["p50_ms", "p90_ms", "p99_ms", "p999_ms"]
    x = np.arange(len(df))
    width = 0.8 / len(cols)
    for i, col in enumerate(cols):
        ax.bar(
            x + (i - 1.5) * width,
            df[col].to_numpy(dtype=float),
            width,
            label=col.replace("_ms", "").replace("p999", "p99.9"),
        )
    ax.set_xticks(
        x,
        [_label(str(a), str(b)) for a, b in zip(df["request_type"], df["name"], strict=True)],
        rotation=20,
        ha="right",
        fontsize=8,
    )
    ax.set_yscale("log")
    _plain_log(ax.yaxis)
    ax.set_ylabel("latency (ms)")
    ax.set_title("Per-transport comparison")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
