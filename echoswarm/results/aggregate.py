"""Master-side merging of reports (from :mod:`echoswarm.results.recorder`) into run totals.

Sans-Locust: :class:`Aggregate` is fed ``(worker id, worker index, report)`` and holds

* per-row totals: counts, exact ok-latency sum, bytes, and whole-run HDR histograms per kind;
* per ``(row, kind, epoch second)`` interval histograms not yet written to the interval logs;
* decoded event batches not yet written to Parquet;
* per-worker bookkeeping (reports, samples, applied event rates, whether its final report came).

Counts are the sums of what workers reported, nothing else: the totals in ``summary.csv`` are
exactly the sum of the workers' rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from hdrh.histogram import HdrHistogram

from echoswarm import hdr
from echoswarm.results.events import decode_batch
from echoswarm.results.recorder import KINDS, REPORT_VERSION

SUMMARY_COLUMNS = (
    "request_type",
    "name",
    "count",
    "failures",
    "rps",
    "mean_ms",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
)
EXTRA_COLUMNS = (
    "error_rate",
    "min_ms",
    "p75_ms",
    "p95_ms",
    "p9999_ms",
    "stdev_ms",
    "bytes",
    "lag_count",
    "lag_p50_ms",
    "lag_p99_ms",
    "lag_max_ms",
)


@dataclass
class RowTotals:
    count: int = 0
    failures: int = 0
    ok_sum_ns: int = 0
    nbytes: int = 0
    hists: dict[str, HdrHistogram] = field(
        default_factory=lambda: {k: hdr.new_histogram() for k in KINDS}
    )


@dataclass
class WorkerInfo:
    id: str
    index: int
    first_report_s: float
    last_report_s: float
    reports: int = 0
    samples: int = 0
    failures: int = 0
    events_offered: int = 0
    events_kept: int = 0
    min_events_rate: float = 1.0
    final: bool = False
    lost: bool = False
    lost_reason: str = ""
    bad_reports: int = 0

    def as_json(self) -> dict[str, Any]:
        host = self.id.rsplit("_", 1)[0] if "_" in self.id else self.id
        return {
            "id": self.id,
            "index": self.index,
            "host": host,
            "first_report_utc": self.first_report_s,
            "last_report_utc": self.last_report_s,
            "reports": self.reports,
            "samples": self.samples,
            "failures": self.failures,
            "events_offered": self.events_offered,
            "events_kept": self.events_kept,
            "min_events_rate": self.min_events_rate,
            "final_report": self.final,
            "lost": self.lost,
            "lost_reason": self.lost_reason,
            "bad_reports": self.bad_reports,
        }


class Aggregate:
    def __init__(self) -> None:
        self.rows: dict[hdr.Row, RowTotals] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.pending: dict[tuple[hdr.Row, str, int], HdrHistogram] = {}
        self.batches: list[pa.RecordBatch] = []
        self.problems: list[str] = []

    def merge(
        self,
        worker_id: str,
        index: int,
        report: dict[str, Any],
        now_s: float,
    ) -> None:
        """Add one report. A malformed report is counted against its worker, never raised."""
        info = self.workers.get(worker_id)
        if info is None:
            info = self.workers[worker_id] = WorkerInfo(worker_id, index, now_s, now_s)
        info.last_report_s = now_s
        info.reports += 1
        try:
            self._merge(info, report)
        except Exception as exc:  # a bad report must not take the master down
            info.bad_reports += 1
            if len(self.problems) < 20:
                self.problems.append(f"worker {worker_id}: bad report: {exc!r}")

    def _merge(self, info: WorkerInfo, report: dict[str, Any]) -> None:
        if report.get("v") != REPORT_VERSION:
            raise ValueError(f"report version {report.get('v')!r} != {REPORT_VERSION}")
        # Decode everything before touching totals, so a bad report changes nothing.
        decoded = [
            (rt, name, kind, int(sec), p if isinstance(p, HdrHistogram) else hdr.decode(p))
            for rt, name, kind, sec, p in report["hist"]
        ]
        batch = decode_batch(report["events"], info.index) if report.get("events") else None
        rows = [
            (str(rt), str(nm), int(c), int(f), int(s), int(b))
            for rt, nm, c, f, s, b in report["rows"]
        ]
        for rt, name, count, failures, ok_sum_ns, nbytes in rows:
            row = self.rows.get((rt, name))
            if row is None:
                row = self.rows[(rt, name)] = RowTotals()
            row.count += count
            row.failures += failures
            row.ok_sum_ns += ok_sum_ns
            row.nbytes += nbytes
            info.samples += count
            info.failures += failures
        for rt, name, kind, sec, h in decoded:
            key = (rt, name)
            row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = RowTotals()
            row.hists[kind].add(h)
            pkey = (key, kind, sec)
            have = self.pending.get(pkey)
            if have is None:
                self.pending[pkey] = h
            else:
                have.add(h)
        if batch is not None and batch.num_rows:
            self.batches.append(batch)
        info.events_offered += int(report.get("events_offered", 0))
        info.events_kept += int(report.get("events_kept", 0))
        if report.get("events_offered"):
            info.min_events_rate = min(info.min_events_rate, float(report["events_rate"]))
        # The latest report decides: a worker that starts again after a stop is not final.
        info.final = bool(report.get("final"))

    # -- draining for the writer ----------------------------------------------------------
    def take_intervals(
        self, before_sec: int | None = None
    ) -> list[tuple[hdr.Row, str, int, HdrHistogram]]:
        """Pending interval histograms for seconds < ``before_sec`` (all if None), sorted."""
        keys = [k for k in self.pending if before_sec is None or k[2] < before_sec]
        keys.sort(key=lambda k: (k[2], k[0], k[1]))
        return [(row, kind, sec, self.pending.pop((row, kind, sec))) for row, kind, sec in keys]

    def take_batches(self) -> list[pa.RecordBatch]:
        out, self.batches = self.batches, []
        return out

    # -- views ----------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return sum(r.count for r in self.rows.values())

    @property
    def failures(self) -> int:
        return sum(r.failures for r in self.rows.values())

    def summary(self, duration_s: float) -> list[dict[str, Any]]:
        """One dict per row with SUMMARY_COLUMNS + EXTRA_COLUMNS (NaN where undefined)."""
        out = []
        for (rt, name), row in sorted(self.rows.items()):
            lat, lag = row.hists["latency"], row.hists["lag"]
            ok = row.count - row.failures
            p = hdr.percentiles_ms(lat, (50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99))
            lp = hdr.percentiles_ms(lag, (50.0, 99.0))
            empty = lat.get_total_count() == 0
            out.append(
                {
                    "request_type": rt,
                    "name": name,
                    "count": row.count,
                    "failures": row.failures,
                    "rps": row.count / duration_s if duration_s > 0 else math.nan,
                    "mean_ms": row.ok_sum_ns / ok / 1e6 if ok > 0 else math.nan,
                    "p50_ms": p[50.0],
                    "p90_ms": p[90.0],
                    "p99_ms": p[99.0],
                    "p999_ms": p[99.9],
                    "max_ms": math.nan if empty else lat.get_max_value() / 1000.0,
                    "error_rate": row.failures / row.count if row.count else math.nan,
                    "min_ms": math.nan if empty else lat.get_min_value() / 1000.0,
                    "p75_ms": p[75.0],
                    "p95_ms": p[95.0],
                    "p9999_ms": p[99.99],
                    "stdev_ms": hdr.mean_stdev_ms(lat)[1],
                    "bytes": row.nbytes,
                    "lag_count": lag.get_total_count(),
                    "lag_p50_ms": lp[50.0],
                    "lag_p99_ms": lp[99.0],
                    "lag_max_ms": math.nan
                    if lag.get_total_count() == 0
                    else lag.get_max_value() / 1000.0,
                }
            )
        return out
