"""Plots of a loaded run, as matplotlib Figures (no pyplot state; Agg when saved).

``spectrum`` (HDR percentile spectrum, log "nines" axis), ``cdf``, ``latency_over_time``,
``throughput_over_time`` and ``comparison_bars``; ``spectrum`` also takes several labelled runs
for comparisons. :func:`png_bytes` renders a Figure to PNG bytes.

Layout helpers shared with the sweep plots: :func:`log_ticks` (plain, non-overlapping labels on a
log axis) and :func:`suptitle` (a figure title wrapped to the figure's width).
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

from analysis.load import Run
from echoswarm import hdr

NINES = [0.0, 90.0, 99.0, 99.9, 99.99, 99.999]
SIZE = (9.0, 4.8)


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=SIZE, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


# Label densities to try on a log axis, densest first: 2-3-5-7, 1-2-5, 1-3, decades.
_LOG_SUBS = ((1.0, 2.0, 3.0, 5.0, 7.0), (1.0, 2.0, 5.0), (1.0, 3.0), (1.0,))
_CHAR_EM = 0.65  # glyph width of the default font's digits (DejaVu Sans: 0.636 em), rounded up
_GAP_IN = 0.15  # free space wanted between two tick labels


def _plain(v: float, _pos: Any = None) -> str:
    return f"{v:g}"


def log_ticks(ax: Axes, which: str = "y") -> None:
    """Plain numbers ("0.5", "20") at the densest 1-2-5-like steps whose labels fit the axis's
    length without touching; minor ticks unlabelled. An axis spanning too little for two log
    ticks gets evenly spaced ones instead. Call after the data is plotted (it reads the view
    limits and lays the figure out once to know the axis's length)."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    fig = ax.get_figure(root=True)
    assert isinstance(fig, Figure)
    fig.draw_without_rendering()  # the final axes size (constrained layout)
    lo, hi = sorted(axis.get_view_interval())
    if not (lo > 0 and math.isfinite(hi) and hi > lo):
        return
    box = ax.get_window_extent()
    length_in = (box.height if which == "y" else box.width) / fig.dpi
    size_in = float(axis.get_ticklabels()[0].get_fontsize() if axis.get_ticklabels() else 10) / 72

    def fits(ticks: list[float]) -> bool:
        if which == "y":
            return len(ticks) * (size_in * 1.5) <= length_in
        need = sum(len(_plain(t)) * _CHAR_EM * size_in + _GAP_IN for t in ticks)
        return need <= length_in

    axis.set_minor_locator(LogLocator(subs="auto"))
    axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(FuncFormatter(_plain))
    candidates = _log_candidates(lo, hi)
    if candidates:
        fitting = [ticks for ticks in candidates if fits(ticks)]
        axis.set_major_locator(FixedLocator(fitting[0] if fitting else candidates[-1]))
        return
    # too narrow for two log steps: evenly spaced ticks, as many as fit
    for nbins in range(6, 0, -1):
        ticks = [float(t) for t in MaxNLocator(nbins).tick_values(lo, hi) if lo <= t <= hi]
        if fits(ticks) or nbins == 1:
            axis.set_major_locator(FixedLocator(ticks))
            return


def _log_candidates(lo: float, hi: float) -> list[list[float]]:
    """Tick sets with at least two ticks inside [lo, hi], densest first: the 1-2-5-like steps,
    then decades, then every 2nd, 3rd … decade."""
    out = []
    for subs in _LOG_SUBS:
        ticks = [float(t) for t in LogLocator(subs=subs).tick_values(lo, hi) if lo <= t <= hi]
        if len(ticks) >= 2:
            out.append(ticks)
    first, last = math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9)
    for stride in range(2, max(2, last - first) + 1):
        ticks = [10.0**e for e in range(first, last + 1) if e % stride == 0]
        if len(ticks) >= 2:
            out.append(ticks)
    return out


def suptitle(fig: Figure, text: str, fontsize: float = 12.0) -> Text:
    """A figure title wrapped to the figure's width (a long one would be cut at both edges)."""
    width_in = fig.get_size_inches()[0] * 0.92
    chars = max(20, int(width_in * 72 / (fontsize * _CHAR_EM)))
    return fig.suptitle(textwrap.fill(text, chars), fontsize=fontsize)


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
    ticks = [1.0 / (1.0 - p / 100.0) for p in NINES]
    ax.set_xticks(ticks, [f"{p:g}%" for p in NINES])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency by percentile (merged HDR histograms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    log_ticks(ax, "y")
    return fig


CDF_POINTS = 4000  # points drawn per row at most (a linear y axis shows no finer steps)


def cdf_data(run: Run, max_points: int = CDF_POINTS) -> dict[hdr.Row, tuple[Any, Any, str]]:
    """Per row: (latency_ms ascending, fraction of successful samples ≤ it, source).

    Source ``"events"``: the recorded latencies of successful samples in ``events.parquet``,
    each weighted by 1/``sample_rate`` (a sampled run still describes every sample) — used when
    the row has events and the run's events were not thinned under load (run.json
    ``events_thinned``; thinning follows load, so what is left over-represents quiet periods).
    Otherwise ``"histogram"``: every non-empty bucket of the merged HDR histogram (3 significant
    digits), never HdrHistogram's coarse percentile iterator. Long rows are cut to about
    ``max_points`` evenly spaced ranks plus the last 50 samples (the tail).
    """
    out: dict[hdr.Row, tuple[Any, Any, str]] = {}
    if not run.run.get("events_thinned"):
        ev = run.events
        ok = ev[ev["error"].isna() & ev["latency_ns"].notna()]
        for (rt, name), g in ok.groupby(["request_type", "name"], sort=True):
            order = np.argsort(g["latency_ns"].to_numpy(dtype=np.int64), kind="stable")
            x = g["latency_ns"].to_numpy(dtype=np.int64)[order] / 1e6
            w = 1.0 / g["sample_rate"].to_numpy(dtype=float)[order]
            y = np.cumsum(w) / w.sum()
            last = np.r_[x[1:] != x[:-1], True]  # one point per value: its cumulative fraction
            out[(str(rt), str(name))] = (*_thin(x[last], y[last], max_points), "events")
    for row, h in sorted(run.latency.items()):
        if row not in out and h.get_total_count():
            x, y = hdr.cdf_points(h)
            out[row] = (*_thin(x, y, max_points), "histogram")
    return dict(sorted(out.items()))


def _thin(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    if n <= max_points:
        return x, y
    keep = np.unique(
        np.r_[np.linspace(0, n - 1, max_points).round().astype(int), np.arange(max(0, n - 50), n)]
    )
    return x[keep], y[keep]


_SOURCES = {
    "events": "recorded samples (events.parquet)",
    "histogram": "merged HDR histograms, 3 significant digits",
}


def cdf(run: Run) -> Figure:
    """Empirical CDF of successful samples per row, at the data's own resolution (see
    :func:`cdf_data`), on a log latency axis."""
    fig, ax = _figure()
    data = cdf_data(run)
    if not data:
        _no_data(ax, "latencies")
        return fig
    for (rt, name), (x, y, _source) in data.items():
        # start at 0 so the first step is drawn; "post": the fraction holds up to the next value
        ax.step(np.r_[x[0], x], np.r_[0.0, y], where="post", label=_label(rt, name))
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of samples ≤ latency")
    ax.set_ylim(0, 1.01)
    sources = sorted({source for _x, _y, source in data.values()})
    ax.set_title("Latency CDF — from " + " and ".join(_SOURCES[s] for s in sources))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    log_ticks(ax, "x")
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
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency over time (per second)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    log_ticks(ax, "y")
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
    ax.set_ylabel("latency (ms)")
    ax.set_title("Per-transport comparison")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    log_ticks(ax, "y")
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
