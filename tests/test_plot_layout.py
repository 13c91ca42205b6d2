"""Report and sweep plots: the CDF is drawn from the data at its own resolution, and nothing is
clipped or overlapping (titles inside the figure, tick labels apart, minor log labels off).

Figures are laid out and drawn with Agg, then the text boxes matplotlib drew are compared, so
a layout regression fails here rather than in someone's report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

import analysis
from analysis import plots
from analysis.sweeps import images as sweep_images
from analysis.sweeps import tcp as sweep_tcp
from echoswarm import hdr
from echoswarm.measure import Sample, now_ns, to_epoch_ns
from echoswarm.results import ResultsWriter
from echoswarm.results.aggregate import Aggregate
from echoswarm.results.recorder import Recorder
from tests.analysis_runs import sparse_tail, write_run

pytestmark = pytest.mark.timeout(60)
MODELS = ["asyncio", "simple", "select", "epoll", "fork", "thread", "prefork", "select_prethread"]


def smooth_us(n: int = 20_000, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.lognormal(np.log(2_000), 0.35, n).astype(np.int64) + 1


@pytest.fixture(scope="module")
def smooth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = {("tcp", "msg"): smooth_us() * 1000, ("tcp", "connect"): smooth_us(300, 2) * 300}
    return write_run(tmp_path_factory.mktemp("s") / "smooth", rows)


# -- what the drawn figure shows --------------------------------------------------------------
def _drawn(fig: Figure) -> Any:
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def tick_labels(
    ax: Axes, which: str, minor: bool = False, renderer: Any = None
) -> list[tuple[str, Bbox]]:
    """The tick labels matplotlib drew on one axis (inside the view, visible, non-empty)."""
    if renderer is None:
        renderer = _drawn(ax.get_figure(root=True))  # type: ignore[arg-type]
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(axis.get_view_interval())
    ticks = axis.get_minor_ticks() if minor else axis.get_major_ticks()
    locs = axis.get_minorticklocs() if minor else axis.get_majorticklocs()
    out = []
    for loc, tick in zip(locs, ticks, strict=False):
        label = tick.label1
        inside = lo - 1e-9 * abs(lo) <= loc <= hi + 1e-9 * abs(hi)
        if inside and label.get_visible() and label.get_text():
            out.append((label.get_text(), label.get_window_extent(renderer)))
    return out


def layout_problems(fig: Figure) -> list[str]:
    """Titles reaching past the figure's edge; tick labels touching each other; labelled minor
    ticks on a log axis."""
    renderer = _drawn(fig)
    problems = []
    box = fig.bbox
    titles = [t for t in [*fig.texts, *(ax.title for ax in fig.axes)] if t.get_text()]
    for t in titles:
        b = t.get_window_extent(renderer)
        if b.x0 < box.x0 - 0.5 or b.x1 > box.x1 + 0.5 or b.y0 < box.y0 - 0.5 or b.y1 > box.y1 + 0.5:
            problems.append(f"title {t.get_text()!r} outside the figure: {b} vs {box}")
    for ax in fig.axes:
        for which in ("x", "y"):
            labels = tick_labels(ax, which, renderer=renderer)
            for i, (a, ba) in enumerate(labels):
                for b_text, bb in labels[i + 1 :]:
                    if ba.overlaps(bb):
                        problems.append(f"{which} tick labels {a!r} and {b_text!r} overlap")
            scale = (ax.get_xscale if which == "x" else ax.get_yscale)()
            if scale == "log" and tick_labels(ax, which, minor=True, renderer=renderer):
                problems.append(f"{which} minor ticks labelled on a log axis")
    return problems


# -- the CDF ----------------------------------------------------------------------------------
def test_cdf_from_events_is_smooth_where_the_data_is(smooth_dir: Path) -> None:
    run = analysis.load(smooth_dir)
    data = plots.cdf_data(run)
    x, y, source = data[("tcp", "msg")]
    assert source == "events" and y[-1] == pytest.approx(1.0)
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)
    below = np.count_nonzero(y < 0.5)
    # HdrHistogram's iterator at 5 ticks per half distance had 7 levels below the median
    levels = [p for p in hdr.spectrum_levels(20_000) if p < 50]
    assert len(levels) == 7 and below > 500, below
    # each point is the fraction of recorded samples at or below it
    raw = np.sort(smooth_us()) / 1000
    for i in np.linspace(0, len(x) - 1, 50).astype(int):
        assert y[i] == pytest.approx(np.searchsorted(raw, x[i], side="right") / raw.size)
    fig = plots.cdf(run)
    drawn = [line for line in fig.axes[0].lines if line.get_label() == "tcp msg"]
    (line,) = drawn
    assert np.unique(np.asarray(line.get_ydata())[np.asarray(line.get_ydata()) < 0.5]).size > 500
    assert "recorded samples" in fig.axes[0].get_title()
    assert layout_problems(fig) == []


def test_cdf_from_histogram_buckets_when_events_were_thinned(tmp_path: Path) -> None:
    values = smooth_us()
    run_dir = write_run(
        tmp_path / "thinned", {("tcp", "msg"): values * 1000}, run_fields={"events_thinned": True}
    )
    run = analysis.load(run_dir)
    x, y, source = plots.cdf_data(run)[("tcp", "msg")]
    assert source == "histogram" and np.count_nonzero(y < 0.5) > 300
    # x = a bucket's highest equivalent value: exactly the samples in buckets up to it are ≤ x
    for i in np.linspace(0, len(x) - 1, 50).astype(int):
        assert y[i] == pytest.approx(np.count_nonzero(values <= round(x[i] * 1000)) / values.size)
    fig = plots.cdf(run)
    assert "HDR histograms" in fig.axes[0].get_title() and layout_problems(fig) == []


def test_cdf_weights_events_by_their_sample_rate(tmp_path: Path) -> None:
    """Worker 0 keeps every event (1 ms), worker 1 one in four (3 ms), 1000 samples each: the
    CDF is 0.5 at 1 ms, as in the histograms — unweighted events would say 0.8."""
    t0 = now_ns() - 5_000_000_000
    agg = Aggregate()
    writer = ResultsWriter(tmp_path / "mixed", {"scenario": "t"}, to_epoch_ns(t0) / 1e9)
    for worker, (rate, lat) in enumerate([(1.0, 1_000_000), (0.25, 3_000_000)]):
        rec = Recorder(sample_rate=rate)
        for i in range(1_000):
            rec.record(Sample("tcp", "msg", t0 + i * 3_000_000, lat, 10, None, 1, 1, i))
        agg.merge(f"w{worker}", worker, rec.harvest(final=True), 0.0)
    writer.finalize(agg, to_epoch_ns(t0) / 1e9 + 4, 3.0, {}, {"duration_s": 3.0}, "complete")
    run = analysis.load(tmp_path / "mixed")
    assert len(run.events) == 1_250
    x, y, source = plots.cdf_data(run)[("tcp", "msg")]
    assert source == "events" and list(x) == [1.0, 3.0] and list(y) == [0.5, 1.0]


# -- layout -----------------------------------------------------------------------------------
def test_report_plots_have_room(smooth_dir: Path, tmp_path: Path) -> None:
    sparse = analysis.load(write_run(tmp_path / "sparse", {("tcp", "msg"): sparse_tail()}))
    for run in (analysis.load(smooth_dir), sparse):
        for key, _title, fig in analysis.report.figures(run):
            assert layout_problems(fig) == [], key


def _tcp_frame(levels: list[int], lo: float, hi: float) -> pd.DataFrame:
    rng = np.random.default_rng(len(levels))
    rows = []
    for users in levels:
        for model in MODELS:
            p50 = rng.uniform(lo, hi)
            rows.append(
                {
                    "users": users,
                    "model": model,
                    "status": "capped" if model == "fork" else "done",
                    "errors": 0,
                    "total_p50_ms": p50,
                    "total_p99_ms": p50 * rng.uniform(1.2, 3.0),
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures the sweep plot functions save (they close them after)."""
    figures: list[Figure] = []
    original = Figure.savefig

    def keep(self: Figure, *args: Any, **kwargs: Any) -> None:
        figures.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


@pytest.mark.parametrize(
    ("levels", "lo", "hi"),
    [([4], 2.0, 9.0), ([4, 16, 64], 2.0, 9.0), ([4, 16], 0.5, 400.0), ([8], 3.0, 3.6)],
)
def test_s003_sweep_plot_has_room(
    levels: list[int], lo: float, hi: float, tmp_path: Path, saved: list[Figure]
) -> None:
    path = sweep_tcp.plot(_tcp_frame(levels, lo, hi), tmp_path / "sweep.png")
    assert path.read_bytes().startswith(b"\x89PNG")
    (fig,) = saved
    assert layout_problems(fig) == []
    assert "S003" in fig.get_suptitle()
    for ax in fig.axes:
        assert len(tick_labels(ax, "x")) >= 2


def test_s001_sweep_plot_has_room(tmp_path: Path, saved: list[Figure]) -> None:
    rows = [
        {"reply": r, "kind": k, "total_s": t, "image_p50_ms": p50, "image_p99_ms": p99}
        for r, k, t, p50, p99 in [
            ("after", "serial", 3.0, 4.2, 10.8),
            ("after", "parallel", 1.1, 4.4, 13.9),
            ("before", "serial", 2.4, 3.7, 11.6),
            ("before", "parallel", 1.8, 6.9, 12.1),
        ]
    ]
    sweep_images.plot(pd.DataFrame(rows), tmp_path / "sweep.png")
    (fig,) = saved
    assert layout_problems(fig) == []
    assert len(tick_labels(fig.axes[1], "y")) >= 2


SMALL, LARGE = (3.0, 2.2), (9.0, 4.8)  # figure sizes, inches


@pytest.mark.parametrize(
    ("which", "size", "span"),
    [
        ("x", SMALL, (3.0, 3.6)),  # less than one log step: evenly spaced ticks
        ("x", SMALL, (2.0, 9.0)),
        ("x", SMALL, (0.01, 60_000.0)),  # seven decades on three inches: every other decade
        ("x", LARGE, (0.5, 400.0)),
        ("y", SMALL, (0.5, 400.0)),
        ("y", LARGE, (0.01, 60_000.0)),
    ],
)
def test_log_ticks_are_plain_and_apart(
    which: str, size: tuple[float, float], span: tuple[float, float]
) -> None:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = np.geomspace(*span, 20)
    ax.plot(values, values)
    ax.set_xscale("log")
    ax.set_yscale("log")
    plots.log_ticks(ax, which)
    labels = tick_labels(ax, which)
    assert len(labels) >= 2, labels
    assert all("×" not in text and "^" not in text for text, _ in labels)
    problems = [p for p in layout_problems(fig) if p.startswith(which)]
    assert problems == []
