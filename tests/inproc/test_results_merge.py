"""Merging: workers' reports → master totals, through the same msgpack wire Locust uses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from locust.rpc.protocol import Message

from echoswarm import hdr
from echoswarm.measure import Sample, now_ns
from echoswarm.results import ResultsWriter, load_histograms, read_events, read_run, read_summary
from echoswarm.results.aggregate import Aggregate
from echoswarm.results.recorder import Recorder

pytestmark = pytest.mark.timeout(60)


def _samples(latencies_us: np.ndarray, t0: int, fail_every: int = 0) -> list[Sample]:
    """Samples spread over ~3 s; every ``fail_every``-th one failed (0 = none)."""
    out = []
    n = len(latencies_us)
    for i, us in enumerate(latencies_us.tolist()):
        start = t0 + i * 3_000_000_000 // n
        error = "echo mismatch" if fail_every and i % fail_every == 0 else None
        sent = start + 50_000  # 50 µs sender lag on every scheduled message
        s = Sample(
            "tcp", "msg", start, us * 1000, 100, error, 1, 7, i, start, sent, start + us * 1000
        )
        out.append(s)
    return out


def _ship(report: dict) -> dict:
    """Worker → master exactly as Locust does it: a "stats" Message, serialized by msgpack."""
    wire = Message("stats", {"echoswarm": report, "user_count": 1}, "w").serialize()
    return Message.unserialize(wire).data["echoswarm"]


def _workers() -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(42)
    lognormal = np.maximum(1, rng.lognormal(np.log(2000), 0.6, 60_000)).astype(np.int64)
    uniform = rng.integers(10_000, 50_000, 40_000)
    bimodal = np.where(
        rng.random(50_000) < 0.05,
        rng.normal(200_000, 20_000, 50_000),
        rng.exponential(3_000, 50_000) + 500,
    ).astype(np.int64)
    return [(lognormal, 0), (uniform, 100), (bimodal, 0)]


def _merge_three(tmp_path: Path | None = None) -> tuple[Aggregate, np.ndarray, int, int]:
    agg = Aggregate()
    t0 = now_ns()
    ok_values = []
    total = failures = 0
    for index, (lat, fail_every) in enumerate(_workers()):
        rec = Recorder()
        samples = _samples(lat, t0, fail_every)
        for chunk in range(0, len(samples), 15_000):  # several reports per worker
            for s in samples[chunk : chunk + 15_000]:
                rec.record(s)
            agg.merge(f"host_{index}", index, _ship(rec.harvest()), 0.0)
        agg.merge(f"host_{index}", index, _ship(rec.harvest(final=True)), 0.0)
        ok = [s.latency_ns // 1000 for s in samples if s.error is None]
        ok_values.append(np.asarray(ok))
        total += len(samples)
        failures += len(samples) - len(ok)
    return agg, np.concatenate(ok_values), total, failures


def test_three_workers_merge_to_the_union_percentiles() -> None:
    agg, union_us, total, failures = _merge_three()
    (row,) = agg.summary(duration_s=3.0)
    assert (row["count"], row["failures"]) == (total, failures)
    assert failures == 400  # every 100th of the uniform worker's 40 000
    for pct, column in ((50, "p50_ms"), (90, "p90_ms"), (99, "p99_ms"), (99.9, "p999_ms")):
        exact_ms = np.percentile(union_us, pct, method="inverted_cdf") / 1000.0
        assert row[column] == pytest.approx(exact_ms, rel=1e-3), column
    assert row["max_ms"] == pytest.approx(union_us.max() / 1000.0, rel=1e-3)
    assert row["mean_ms"] == pytest.approx(union_us.mean() / 1000.0, rel=1e-9)  # exact sum
    assert row["lag_count"] == total - failures
    assert row["lag_p99_ms"] == pytest.approx(0.050, rel=1e-3)
    assert row["bytes"] == 100 * total
    # every sample landed in exactly one per-second interval, of the right kind
    pending = agg.take_intervals()
    by_kind: dict[str, int] = {}
    for _row, kind, _sec, h in pending:
        by_kind[kind] = by_kind.get(kind, 0) + h.get_total_count()
    assert by_kind == {"latency": total - failures, "failed": failures, "lag": total - failures}
    assert len({sec for _r, _k, sec, _h in pending}) >= 3
    # every sample is an event (rate 1.0), tagged with its worker
    events = pa.Table.from_batches(agg.take_batches())
    assert events.num_rows == total
    counts = events.group_by("worker").aggregate([("worker", "count")]).to_pydict()
    assert dict(zip(counts["worker"], counts["worker_count"], strict=True)) == {
        0: 60_000,
        1: 40_000,
        2: 50_000,
    }
    assert events["latency_ns"].to_numpy().sum() == sum(
        int(x) * 1000 for lat, _ in _workers() for x in lat
    )


def test_written_directory_reads_back_the_same(tmp_path: Path) -> None:
    agg, union_us, total, failures = _merge_three()
    whole = {
        k: (t.count, hdr.value_at_percentile_ms(t.hists["latency"], 99.0))
        for k, t in agg.rows.items()
    }
    writer = ResultsWriter(tmp_path / "run", {"scenario": "t"}, 1_000.0)
    summary = agg.summary(3.0)
    writer.finalize(agg, 1_010.0, 3.0, {}, {"count": agg.count}, "complete")
    run = read_run(tmp_path / "run")
    assert run["status"] == "complete" and run["events_rows_written"] == total
    (row,) = read_summary(tmp_path / "run")
    assert row["count"] == total and row["failures"] == failures
    assert row["p99_ms"] == pytest.approx(summary[0]["p99_ms"], rel=1e-6)
    hists = load_histograms(tmp_path / "run")
    assert hists[("tcp", "msg")].get_total_count() == total - failures
    assert hdr.value_at_percentile_ms(hists[("tcp", "msg")], 99.0) == whole[("tcp", "msg")][1]
    assert row["p99_ms"] == pytest.approx(whole[("tcp", "msg")][1], abs=5e-5)  # 4 decimals
    assert run["summary_csv"]["rows"] == 1  # read_summary checked the file against it
    failed = load_histograms(tmp_path / "run", "failed")
    assert failed[("tcp", "msg")].get_total_count() == failures
    assert read_events(tmp_path / "run").num_rows == total
    assert not (tmp_path / "run" / "events.parts").exists()


def test_sample_rate_is_exact_and_recorded() -> None:
    rec = Recorder(sample_rate=0.25)
    lat = np.full(10_000, 1_000)
    for s in _samples(lat, now_ns()):
        rec.record(s)
    report = _ship(rec.harvest())
    assert report["events_offered"] == 10_000 and report["events_kept"] == 2_500
    agg = Aggregate()
    agg.merge("w", 3, report, 0.0)
    table = pa.Table.from_batches(agg.take_batches())
    assert table.num_rows == 2_500
    assert set(table["sample_rate"].to_pylist()) == {0.25}
    assert set(table["worker"].to_pylist()) == {3}
    assert agg.summary(1.0)[0]["count"] == 10_000  # histograms still see every sample


def test_over_the_cap_the_batch_is_thinned_at_a_recorded_rate() -> None:
    rec = Recorder(max_events_per_report=1_000)
    for s in _samples(np.full(5_000, 500), now_ns()):
        rec.record(s)
    report = rec.harvest()
    assert report["events_rate"] == 0.125  # halved three times: 5 000 → under 1 000
    assert report["events_kept"] == pytest.approx(5_000 * 0.125, abs=2)
    agg = Aggregate()
    agg.merge("w", 0, _ship(report), 0.0)
    assert agg.workers["w"].min_events_rate == 0.125
    assert pa.Table.from_batches(agg.take_batches())["sample_rate"].to_pylist()[0] == 0.125
    assert rec.harvest()["events_rate"] == 0.25  # a quiet interval climbs back


def test_bad_report_is_counted_not_raised_and_changes_nothing() -> None:
    agg = Aggregate()
    rec = Recorder()
    rec.record(_samples(np.array([1_000]), now_ns())[0])
    good = _ship(rec.harvest())
    bad = dict(good, hist=[["tcp", "msg", "latency", 1, "not base64!"]])
    agg.merge("w", 0, bad, 0.0)
    assert agg.workers["w"].bad_reports == 1 and agg.problems
    assert agg.count == 0 and not agg.pending
    agg.merge("w", 0, {"v": 99}, 0.0)
    assert agg.workers["w"].bad_reports == 2
    agg.merge("w", 0, good, 0.0)
    assert agg.count == 1


def test_tags_round_trip_names_with_spaces_and_slashes() -> None:
    for row in (("grpc", "bidi msg"), ("ws", "a/b, c"), ("tcp", "")):
        assert hdr.row_of(hdr.tag_of(row)) == row
        assert "," not in hdr.tag_of(row) and " " not in hdr.tag_of(row)
    assert math.isnan(hdr.percentiles_ms(hdr.new_histogram())[50.0])


def test_inlined_record_matches_the_library() -> None:
    rng = np.random.default_rng(3)
    edges = [1, 2, 2047, 2048, 2049, 4095, 4096, 60_000_000]
    values = [
        *rng.integers(1, 5_000, 5_000).tolist(),
        *rng.integers(1, 60_000_001, 5_000).tolist(),
        *edges,
    ]
    ours, theirs = hdr.new_histogram(), hdr.new_histogram()
    for v in values:
        hdr.record_us(ours, v)
        theirs.record_value(v)
    assert ours.encode() == theirs.encode()
    assert (ours.get_min_value(), ours.get_max_value()) == (1, theirs.get_max_value())


def test_local_reports_skip_the_wire_and_merge_the_same() -> None:
    wired, local = Aggregate(), Aggregate()
    t0 = now_ns()
    for agg, wire in ((wired, True), (local, False)):
        rec = Recorder()
        for s in _samples(np.arange(1, 3_001) * 7, t0, fail_every=10):
            rec.record(s)
        report = rec.harvest(final=True, wire=wire)
        agg.merge("local", 0, _ship(report) if wire else report, 0.0)
    assert wired.summary(1.0) == local.summary(1.0)
    a, b = (pa.Table.from_batches(x.take_batches()) for x in (wired, local))
    assert a.equals(b) and a.num_rows == 3_000


def test_vectorized_histogram_matches_recording_each_value() -> None:
    rng = np.random.default_rng(5)
    ns = np.concatenate(
        [
            rng.integers(0, 5_000_000, 20_000),
            rng.integers(0, 70_000_000_000, 20_000),  # beyond 60 s: pinned to the top
            np.array([-5, 0, 999, 1_000, 2_047_999, 2_048_000, 4_096_000, 60_000_000_000]),
        ]
    )
    one_by_one = hdr.new_histogram()
    for v in ns.tolist():
        one_by_one.record_value(hdr.clamp_us(v))
    built = hdr.from_ns(ns)
    assert built.encode() == one_by_one.encode()
    assert (built.get_min_value(), built.get_max_value(), built.get_total_count()) == (
        one_by_one.get_min_value(),
        one_by_one.get_max_value(),
        one_by_one.get_total_count(),
    )
    assert hdr.from_ns(np.array([], dtype=np.int64)).get_total_count() == 0
