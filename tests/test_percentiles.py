"""Percentiles by nearest rank, everywhere echoswarm reports one.

A reported pNN must be a value that at least NN % of the samples do not exceed. HdrHistogram's
own ``get_value_at_percentile`` rounds its target count instead and, on a sparse tail, reports
the body: 960 samples with 10 slow ones gave p99 11.39 ms in a real run where nearest rank gives
55.43 ms. Each case is checked against numpy on the raw values (``method="inverted_cdf"`` is
nearest rank), to the histogram's bucket (3 significant digits), through every public function
that returns percentiles: hdr.percentiles_ms / value_at_percentile_ms / spectrum, summary.csv
(written by the real writer), analysis summaries, the per-second timeline and compare."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hdrh.histogram import HdrHistogram

import analysis
from echoswarm import hdr
from echoswarm.results import read_summary
from tests.analysis_runs import sparse_tail, write_run

pytestmark = pytest.mark.timeout(60)
PCTS = (0.0, 0.1, 1.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99, 100.0)
SUMMARY = {"p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "p999_ms": 99.9}


def _cases() -> dict[str, np.ndarray]:
    """Latencies in µs."""
    rng = np.random.default_rng(11)
    return {
        "960 with 10 outliers": sparse_tail() // 1000,
        "1 sample": np.array([4_321]),
        "2 samples": np.array([1_000, 90_000]),
        "100 samples": np.arange(1, 101) * 1_000,  # p99 is the 99th: 99 ms, not 100
        "1000 with 1 outlier": np.r_[np.full(999, 2_000), 500_000],
        "smooth": rng.lognormal(np.log(3_000), 0.5, 20_000).astype(np.int64) + 1,
    }


def _bucket(h: HdrHistogram, us: float) -> tuple[int, int]:
    return h.get_lowest_equivalent_value(int(us)), h.get_highest_equivalent_value(int(us))


def nearest_rank(values_us: np.ndarray, p: float) -> float:
    """The k-th smallest value, k = ceil(p·N/100) (≥ 1), with k in exact decimal arithmetic.

    Not ``np.percentile(method="inverted_cdf")``, although that is the same definition: numpy
    computes N·q in floats, and 0.999 × 1000 = 999.0000000000001 makes its p99.9 of 1000
    samples the 1000th (the maximum) instead of the 999th.
    """
    k = max(1, math.ceil(Decimal(repr(p)) * len(values_us) / 100))
    return float(np.sort(values_us)[k - 1])


def assert_nearest_rank(values_us: np.ndarray, p: float, got_ms: float) -> None:
    """``got_ms`` is the nearest-rank value of the raw values, to the histogram's bucket, and at
    least p % of the raw values are at or below it."""
    h = hdr.new_histogram()
    ref = nearest_rank(values_us, p)
    low, high = _bucket(h, ref)
    got_us = got_ms * 1000
    assert abs(got_us - (high if p else low)) < 1e-6, (p, got_ms, ref)  # float ms of whole µs
    assert abs(got_us - ref) <= high - low + 1  # within one 3-digit bucket
    covered = int(np.count_nonzero(values_us <= round(got_us)))
    assert covered * 100 >= Decimal(repr(p)) * len(values_us), (p, got_ms, covered)


def test_numpy_agrees_where_its_floats_do() -> None:
    values = _cases()["960 with 10 outliers"]
    for p in (50.0, 90.0, 99.0):
        assert nearest_rank(values, p) == np.percentile(values, p, method="inverted_cdf")
    assert nearest_rank(values, 99.0) >= 55_430


@pytest.mark.parametrize("case", list(_cases()))
def test_hdr_percentiles_are_nearest_rank(case: str) -> None:
    values = _cases()[case]
    h = hdr.from_ns(values * 1000)
    got = hdr.percentiles_ms(h, PCTS)
    for p in PCTS:
        assert_nearest_rank(values, p, got[p])
        assert hdr.value_at_percentile_ms(h, p) == got[p]
    assert got[100.0] == h.get_max_value() / 1000 and got[0.0] == h.get_min_value() / 1000
    assert list(got.values()) == sorted(got.values())


def test_the_reported_case_p99_covers_the_tail() -> None:
    values = sparse_tail() // 1000
    h = hdr.from_ns(values * 1000)
    assert h.get_value_at_percentile(99.0) / 1000 < 11.4  # the library's rounding: the body
    assert hdr.value_at_percentile_ms(h, 99.0) >= 55.43  # nearest rank: the first slow one
    assert hdr.target_count(99.0, 960) == 951 and hdr.target_count(99.0, 100) == 99


def test_target_count_is_exact_for_decimal_percentiles() -> None:
    # 33.3 * 100000 / 100 is 33299.999… in floats; the target is 33300, not 33301 or 33299
    assert hdr.target_count(33.3, 100_000) == 33_300
    assert hdr.target_count(99.9, 1_000) == 999 and hdr.target_count(99.99, 10_000) == 9_999
    assert hdr.target_count(0.0, 5) == 1 and hdr.target_count(100.0, 5) == 5
    values = np.arange(1, 100_001)  # µs, one per value: the k-th smallest is k
    h = hdr.from_ns(values * 1000)
    assert hdr.value_at_percentile_ms(h, 33.3) * 1000 == h.get_highest_equivalent_value(33_300)
    for bad in (-1.0, 100.5, math.nan):
        with pytest.raises(ValueError):
            hdr.percentiles_ms(h, (bad,))
        with pytest.raises(ValueError):
            hdr.percentiles_ms(hdr.new_histogram(), (bad,))
    assert math.isnan(hdr.value_at_percentile_ms(hdr.new_histogram(), 99.0))


@pytest.mark.parametrize("case", list(_cases()))
def test_spectrum_rows_are_nearest_rank(case: str) -> None:
    values = _cases()[case]
    h = hdr.from_ns(values * 1000)
    rows = hdr.spectrum(h)
    assert rows[-1][0] == 100.0 and rows[-1][1] == h.get_max_value() / 1000
    assert rows[0][0] == 0.0 and rows[0][1] == h.get_min_value() / 1000
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    for p, value_ms, count in rows:
        assert_nearest_rank(values, p, value_ms)
        assert count == np.count_nonzero(values <= _bucket(h, value_ms * 1000)[1])


def test_summary_csv_analysis_timeline_and_compare_are_nearest_rank(tmp_path: Path) -> None:
    cases = _cases()
    rows = {("tcp", case): cases[case] * 1000 for case in cases}
    run_dir = write_run(tmp_path / "run", rows)
    on_disk = {r["name"]: r for r in read_summary(run_dir)}
    run = analysis.load(run_dir)
    table = analysis.summary_table(run).set_index("name")
    versus = analysis.compare(run, run).set_index(["name", "metric"])
    for case, values in cases.items():
        for column, p in SUMMARY.items():
            assert_nearest_rank(values, p, on_disk[case][column])
            assert table.loc[case, column] == on_disk[case][column]
            assert versus.loc[(case, column), "a"] == on_disk[case][column]
        for column, p in {"p75_ms": 75.0, "p95_ms": 95.0, "p9999_ms": 99.99}.items():
            assert_nearest_rank(values, p, on_disk[case][column])
    # the per-second timeline, against numpy on each second's samples (from events.parquet)
    ev = run.events
    ev = ev.assign(sec=(ev["start_ns"] + ev["latency_ns"]) // 1_000_000_000)
    timeline = run.timeline.assign(sec=run.timeline["time"].map(pd.Timestamp.timestamp))
    checked = 0
    for (name, sec), g in ev.groupby(["name", "sec"]):
        line = timeline[(timeline["name"] == name) & (timeline["sec"] == sec)]
        assert len(line) == 1 and line["count"].item() == len(g)
        values = g["latency_ns"].to_numpy(dtype=np.int64) // 1000
        for column, p in {"p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "p999_ms": 99.9}.items():
            assert_nearest_rank(values, p, line[column].item())
        checked += 1
    assert checked >= len(cases) * 3
