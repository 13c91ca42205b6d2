"""Results directories with known latencies, written by the real writer (Recorder → Aggregate →
ResultsWriter), for the analysis tests: every figure they check is known in advance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from echoswarm.hdr import Row
from echoswarm.measure import Sample, now_ns, to_epoch_ns
from echoswarm.results import ResultsWriter
from echoswarm.results.aggregate import Aggregate
from echoswarm.results.recorder import Recorder


def write_run(
    path: Path,
    rows: dict[Row, np.ndarray],
    *,
    seconds: float = 4.0,
    sample_rate: float = 1.0,
    run_fields: dict[str, Any] | None = None,
) -> Path:
    """One results directory: per row, one successful sample per latency (ns, any order),
    spread evenly over ``seconds``; events kept at ``sample_rate``."""
    t0 = now_ns() - int((seconds + 2) * 1e9)
    rec, agg = Recorder(sample_rate=sample_rate), Aggregate()
    writer = ResultsWriter(path, {"scenario": "synthetic", "mode": "local"}, to_epoch_ns(t0) / 1e9)
    for (rt, name), latencies in rows.items():
        step = int(seconds * 1e9) // max(1, len(latencies))
        for i, lat in enumerate(np.asarray(latencies, dtype=np.int64).tolist()):
            start = t0 + i * step
            rec.record(Sample(rt, name, start, lat, 100, None, i % 8, i % 8, i))
        agg.merge("local", 0, rec.harvest(), 0.0)
    agg.merge("local", 0, rec.harvest(final=True), 0.0)
    fields = {"duration_s": seconds, "count": agg.count, "failures": agg.failures}
    fields |= run_fields or {}
    writer.finalize(agg, to_epoch_ns(t0) / 1e9 + seconds, seconds, {}, fields, "complete")
    return path


def sparse_tail(n: int = 960, outliers: int = 10, seed: int = 1) -> np.ndarray:
    """``n`` latencies (ns): a 5–11.39 ms body and ``outliers`` of them at 55.4–60 ms — the
    shape of the 2-worker run in which HdrHistogram's rounding hid the tail from p99."""
    rng = np.random.default_rng(seed)
    body = rng.uniform(5.0e6, 11.39e6, n - outliers)
    tail = rng.uniform(55.43e6, 60.0e6, outliers)
    return rng.permutation(np.r_[body, tail]).astype(np.int64)
