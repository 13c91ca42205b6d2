"""analysis: load, summaries, plots, report (rendered in headless Chromium), compare, bad input.

Runs are built with the real writer (Recorder → Aggregate → ResultsWriter) from samples with a
known shape, so every figure checked here is known in advance."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

import analysis
from analysis.__main__ import main
from echoswarm.measure import Sample, now_ns, to_epoch_ns
from echoswarm.results import ResultsWriter
from echoswarm.results.aggregate import Aggregate
from echoswarm.results.recorder import Recorder
from tests import procs
from tests.conftest import require_tool

pytestmark = pytest.mark.timeout(60)
INTERVAL_NS = 10_000_000  # paced: one message every 10 ms per stream
STREAMS, MSGS = 4, 400  # 4 s of traffic


def make_run(path: Path, scale: float = 1.0, empty: bool = False) -> Path:
    """Paced tcp streams whose latency alternates 1 ms / 3 ms (× scale), plus connects.

    Every 100th message of stream 0 fails. Jitter (|deviation| of inter-arrival from the
    schedule) is therefore 2 ms × scale for every adjacent pair of answered messages.
    """
    t0 = now_ns() - 6_000_000_000
    rec, agg = Recorder(), Aggregate()
    writer = ResultsWriter(path, {"scenario": "synthetic", "mode": "local"}, to_epoch_ns(t0) / 1e9)
    for stream in range([STREAMS, 0][empty]):
        rec.record(Sample("tcp", "connect", t0, int(2e6 * scale), 0, None, stream, stream))
        for seq in range(MSGS):
            due = t0 + 5_000_000 + seq * INTERVAL_NS
            lat = int((1e6 if seq % 2 else 3e6) * scale)
            err = "echo mismatch" if stream == 0 and seq % 100 == 50 else None
            rec.record(
                Sample(
                    "tcp",
                    "msg",
                    due,
                    lat,
                    3200,
                    err,
                    stream,
                    stream,
                    seq,
                    due,
                    due + 20_000,
                    due + lat if err is None else 0,
                )
            )
        agg.merge("local", 0, rec.harvest(), 0.0)
    end = to_epoch_ns(t0) / 1e9 + 4.1
    agg.merge("local", 0, rec.harvest(final=True), 0.0)
    writer.finalize(
        agg,
        end,
        4.1,
        {},
        {"duration_s": 4.1, "count": agg.count, "failures": agg.failures},
        "complete",
    )
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("a") / "run-a")


def test_load_gives_tidy_frames(run_dir: Path) -> None:
    run = analysis.load(run_dir)
    assert run.complete and run.run["scenario"] == "synthetic"
    s = run.summary.set_index("name")
    assert s.loc["msg", "count"] == STREAMS * MSGS and s.loc["msg", "failures"] == 4
    assert s.loc["connect", "count"] == STREAMS
    assert len(run.events) == STREAMS * MSGS + STREAMS
    assert run.events["received_ns"].isna().sum() == 4 + STREAMS  # failures and connects
    tl = run.timeline
    assert tl.groupby("name")["count"].sum().to_dict() == {"connect": 4, "msg": 1600}
    assert 4 <= tl[tl["name"] == "msg"]["t_s"].nunique() <= 6
    spec = run.histograms[run.histograms["name"] == "msg"]
    assert spec["value_ms"].is_monotonic_increasing and spec["percentile"].max() == 100.0
    assert spec["value_ms"].min() == pytest.approx(1.0, rel=1e-3)
    assert spec["value_ms"].max() == pytest.approx(3.0, rel=1e-3)


def test_summaries(run_dir: Path) -> None:
    run = analysis.load(run_dir)
    table = analysis.summary_table(run).set_index("name")
    assert table.loc["msg", "error_rate"] == pytest.approx(4 / 1600)
    assert table.loc["msg", "p50_ms"] == pytest.approx(1.0, rel=1e-3)
    assert table.loc["msg", "p99_ms"] == pytest.approx(3.0, rel=1e-3)
    jitter = analysis.jitter_table(run).set_index("name")
    assert list(jitter.index) == ["msg"]
    assert jitter.loc["msg", "streams"] == STREAMS
    assert jitter.loc["msg", "pairs"] == STREAMS * (MSGS - 1) - 2 * 4  # pairs around failures
    assert jitter.loc["msg", "jitter_mean_ms"] == pytest.approx(2.0, rel=1e-6)
    assert jitter.loc["msg", "jitter_max_ms"] == pytest.approx(2.0, rel=1e-6)
    lag = analysis.lag_table(run)
    assert list(lag["name"]) == ["msg"] and lag["lag_count"][0] == STREAMS * MSGS - 4
    assert lag["lag_p99_ms"][0] == pytest.approx(0.020, rel=1e-3)  # every send 20 µs late
    connect = analysis.connect_table(run)
    assert list(connect["name"]) == ["connect"] and connect["p50_ms"][0] == pytest.approx(2.0, 1e-3)


def test_plots_are_figures(run_dir: Path) -> None:
    run = analysis.load(run_dir)
    for make in (
        analysis.plots.spectrum,
        analysis.plots.cdf,
        analysis.plots.latency_over_time,
        analysis.plots.throughput_over_time,
        analysis.plots.comparison_bars,
    ):
        fig = make(run)
        assert isinstance(fig, Figure) and fig.axes[0].has_data()
        assert analysis.plots.png_bytes(fig).startswith(b"\x89PNG")


def test_report_cli_and_html_renders_in_chromium(run_dir: Path, tmp_path: Path) -> None:
    chromium = require_tool("chromium")
    out = subprocess.run(
        [procs.PYTHON, "-m", "analysis", "report", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=procs.ROOT,
        env=procs.env(),
    )
    assert out.returncode == 0, out.stderr
    assert "p999_ms" in out.stdout and "msg" in out.stdout and out.stderr == ""
    html = (run_dir / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 5
    md = (run_dir / "report.md").read_text()
    assert "| tcp | msg | 1,600 | 4 |" in md and "![Latency by percentile](spectrum.png)" in md
    flags = procs.chromium_flags(tmp_path / "profile")
    url = (run_dir / "report.html").resolve().as_uri()
    shot = tmp_path / "shot.png"
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", f"--screenshot={shot}", "--window-size=1200,5200", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('<img class="plot"') == 5 and "Jitter of paced streams" in dom.stdout
    import matplotlib.image

    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(int)
    blue = np.all(np.abs(pixels - [31, 119, 180]) <= 12, axis=-1)  # matplotlib's first color
    assert blue.sum() > 500, "the plots did not render"


def test_compare(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slow = make_run(tmp_path / "run-slow", scale=1.5)
    table = analysis.compare(analysis.load(run_dir), analysis.load(slow), threshold=0.10)
    p99 = table[(table["name"] == "msg") & (table["metric"] == "p99_ms")].iloc[0]
    assert p99["ratio"] == pytest.approx(1.5, rel=2e-3) and p99["flag"] == "regression"
    same = analysis.compare(analysis.load(run_dir), analysis.load(run_dir))
    assert (same["flag"] == "").all()
    plot = tmp_path / "cmp.png"
    assert main(["compare", str(run_dir), str(slow), "--plot", str(plot)]) == 0
    assert plot.read_bytes().startswith(b"\x89PNG")
    printed = capsys.readouterr().out
    assert "regression" in printed and "tcp msg p99_ms x1.50" in printed
    code = main(
        [
            "compare",
            str(run_dir),
            str(slow),
            "--threshold",
            "60",
            "--fail-on-regression",
            "--plot",
            str(plot),
        ]
    )
    assert code == 0  # 50 % slower is within a 60 % threshold
    code = main(["compare", str(run_dir), str(slow), "--fail-on-regression", "--plot", str(plot)])
    assert code == 1


def test_empty_run_still_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = make_run(tmp_path / "empty", empty=True)
    assert main(["report", str(empty)]) == 0
    assert "(no rows)" in capsys.readouterr().out
    assert (empty / "report.html").read_text().count("data:image/png") == 5
    assert analysis.load(empty).events.empty


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], expect: str) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and expect in err, err


def test_bad_input_is_one_line_exit_2(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails(["report", str(tmp_path / "nope")], capsys, "no such results directory")
    _fails([], capsys, "error")
    _fails(["compare", str(run_dir)], capsys, "required")
    _fails(["compare", str(run_dir), str(run_dir), "--threshold", "x"], capsys, "percentage")
    _fails(["report", str(tmp_path)], capsys, "run.json: missing")

    def broken(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(run_dir, d)
        return d

    d = broken("bad-json")
    (d / "run.json").write_text("{not json")
    _fails(["report", str(d)], capsys, "run.json: unreadable or corrupt")
    d = broken("bad-summary")
    (d / "summary.csv").write_text("a,b\n1,2\n")
    _fails(["report", str(d)], capsys, "summary.csv: cut short or altered: 1 data row where")
    d = broken("no-hlog")
    (d / "histograms" / "latency.hlog").unlink()
    _fails(["report", str(d)], capsys, "latency.hlog: missing")
    d = broken("bad-hlog")
    (d / "histograms" / "lag.hlog").write_bytes(b"\x00garbage\nmore garbage\n")
    _fails(["report", str(d)], capsys, "lag.hlog: corrupt")
    d = broken("no-events")
    (d / "events.parquet").unlink()
    _fails(["report", str(d)], capsys, "events.parquet: missing")
    d = broken("bad-events")
    (d / "events.parquet").write_bytes(b"PAR1 this is not parquet")
    _fails(["report", str(d)], capsys, "events.parquet: corrupt")


def test_torn_last_hlog_line_is_skipped(run_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "torn"
    shutil.copytree(run_dir, d)
    log = d / "histograms" / "latency.hlog"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid-line
    run = analysis.load(d)
    assert run.intervals["latency"].skipped and run.complete
    assert json.loads((d / "run.json").read_text())["status"] == "complete"


def test_report_states_the_instruments_own_cost(run_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "instrument"
    shutil.copytree(run_dir, d)
    meta = json.loads((d / "run.json").read_text())
    meta["instrument_overhead"] = {
        "tcp": {
            "p50_ms": 0.05,
            "p99_ms": 0.21,
            "source": "python -m bench overhead",
            "streams": 240,
            "measured_utc": "2026-12-01T10:00:00Z",
        },
        "ws": "not a mapping",  # malformed entries are left out, not fatal
    }
    (d / "run.json").write_text(json.dumps(meta))
    run = analysis.load(d)
    table = analysis.instrument_table(run).set_index("transport")
    assert list(table.index) == ["tcp"]
    assert table.loc["tcp", "lag_count"] == STREAMS * MSGS - 4  # every answered scheduled msg
    assert table.loc["tcp", "sender_lag_p99_ms"] == pytest.approx(0.020, rel=1e-3)
    assert table.loc["tcp", "overhead_p99_ms"] == 0.21
    analysis.write_report(run)
    md = (d / "report.md").read_text()
    section = md.split("## Instrument\n", 1)[1].split("\n## ", 1)[0]
    assert "| tcp | 1,596 | 0.02 | 0.02 |" in section
    assert (
        "- tcp: instrument overhead p50 +0.05 ms, p99 +0.21 ms over a lean reference client "
        "(240 streams, 2026-12-01T10:00:00Z) — measured by python -m bench overhead" in section
    )
    assert md.index("## Summary") < md.index("## Instrument") < md.index("## Connect times")
    assert "<h2>Instrument</h2>" in (d / "report.html").read_text()
    # a run with neither sender lag nor overhead figures has no such section
    empty = analysis.load(make_run(tmp_path / "empty", empty=True))
    assert analysis.instrument_table(empty).empty
    analysis.write_report(empty)
    assert "## Instrument" not in (tmp_path / "empty" / "report.md").read_text()
