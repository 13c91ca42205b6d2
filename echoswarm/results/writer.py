"""The results directory (DESIGN.md "Results directory"; docs/ARCHITECTURE.md section 4).

:class:`ResultsWriter` is used by the master (or the local runner) only. It writes everything
incrementally — ``run.json`` at start with ``status: running``, then every report interval the
closed seconds of the interval logs, a Parquet part of the new events, ``summary.csv`` and
``live.json`` — and finalizes at quit (``status: complete``, ``partial`` or ``interrupted``,
events consolidated). ``run.json`` names its writer (``writer``: pid, host, the process's start
time, and when it last wrote), so a reader can tell a run in progress from one whose writer died.
Every whole-file write goes through a temporary file and a rename, and the logs are append-only,
so a killed master leaves a readable directory.

``summary.csv`` is vouched for by ``run.json``: ``"summary_csv": {"rows": N, "sha256": "...",
"previous": {...} | null}``. Each time the writer replaces the summary it first writes
``run.json`` announcing the new one (keeping the one still on disk as ``previous``), then renames
the new summary into place; at the end it drops ``previous`` and sets the final ``status`` only
once the final summary is in place. So at every instant — and after a kill at any point — the
summary on disk is one that ``run.json`` vouches for, and a finished run's only the final one.
:func:`read_summary` checks the file against it: a summary cut at a row boundary (which still
parses) or changed after the run (a torn copy, a hand edit) is refused with a
:class:`ResultsError` instead of being read as the whole table. A directory written before these
fields existed is read with a :class:`ResultsWarning` (it cannot be checked).

The readers are in :mod:`echoswarm.results.reader`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from echoswarm import hdr
from echoswarm.measure import epoch_ns
from echoswarm.results.aggregate import EXTRA_COLUMNS, SUMMARY_COLUMNS, Aggregate
from echoswarm.results.events import PartWriter, consolidate
from echoswarm.results.layout import (
    HIST_DIR,
    HLOG_FILES,
    LIVE_JSON,
    RUN_JSON,
    SCHEMA_VERSION,
    SUMMARY_CHECK,
    SUMMARY_CSV,
    utc_iso,
    write_json_atomic,
    writer_identity,
)


def summary_csv_bytes(rows: list[dict[str, Any]]) -> tuple[bytes, dict[str, Any]]:
    """The bytes of ``summary.csv`` for these rows, and what ``run.json`` records of them."""
    columns = SUMMARY_COLUMNS + EXTRA_COLUMNS
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(columns)
    for row in rows:
        w.writerow([_csv_cell(row[c]) for c in columns])
    data = buf.getvalue().encode()
    return data, {"rows": len(rows), "sha256": hashlib.sha256(data).hexdigest()}


def _csv_cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}" if abs(v) >= 1e5 else f"{v:.4f}"
    return v


class ResultsWriter:
    """Owns one run directory; see the module docstring for what is written when."""

    # Seconds younger than this stay in memory so late worker reports land in the same interval.
    HOLD_S = 5

    def __init__(
        self,
        run_dir: Path,
        meta: dict[str, Any],
        start_epoch_s: float,
        offload: Callable[..., Any] | None = None,
    ) -> None:
        """``offload(fn, args)`` runs the Parquet part writes elsewhere (the plugin passes gevent's
        native-thread pool: pyarrow releases the GIL, so the event loop keeps running)."""
        self._offload = offload
        self.dir = run_dir
        self.start_epoch_s = start_epoch_s
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / HIST_DIR).mkdir(exist_ok=True)
        self.meta: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "status": "running",
            "writer": writer_identity(),
            "start_utc": utc_iso(start_epoch_s),
            "start_epoch_s": start_epoch_s,
            "end_utc": None,
            **meta,
        }
        self._logs = {
            kind: hdr.IntervalLogWriter(
                self.dir / HIST_DIR / name, start_epoch_s, f"echoswarm {kind} (microseconds)"
            )
            for kind, name in HLOG_FILES.items()
        }
        self.parts = PartWriter(self.dir)
        self.finalized = False
        # Completions per epoch second, every row and worker (latency + failed), as written to
        # the interval logs: what the gap estimates compare (echoswarm.results.gaps).
        self.second_counts: dict[int, int] = {}
        # Readers of a run that has only just started see an empty table, not a missing file.
        self._replace_summary([])

    def update(
        self,
        agg: Aggregate,
        now_s: float,
        duration_s: float,
        live: dict[str, Any],
        run_fields: dict[str, Any],
    ) -> None:
        """One report interval's worth of incremental writes."""
        self._write_intervals(agg, int(now_s) - self.HOLD_S)
        batches = agg.take_batches()
        if self._offload is not None and batches:
            self._offload(self.parts.write, (batches,))
        else:
            self.parts.write(batches)
        self.meta.update(run_fields)
        self.meta["events_rows_written"] = self.parts.rows
        self._replace_summary(agg.summary(duration_s))
        write_json_atomic(self.dir / LIVE_JSON, live)

    def finalize(
        self,
        agg: Aggregate,
        now_s: float,
        duration_s: float,
        live: dict[str, Any],
        run_fields: dict[str, Any],
        status: str,
    ) -> None:
        if self.finalized:
            return
        self._write_intervals(agg, None)
        for log in self._logs.values():
            log.close()
        self.parts.write(agg.take_batches())
        rows = consolidate(self.dir)
        self.meta.update(run_fields)
        self._replace_summary(agg.summary(duration_s))
        # the final status only once the final summary is in place, and no other accepted
        self.meta[SUMMARY_CHECK]["previous"] = None
        self.meta.update(
            status=status, end_utc=utc_iso(now_s), end_epoch_s=now_s, events_rows_written=rows
        )
        self._write_run_json()
        write_json_atomic(self.dir / LIVE_JSON, live)
        self.finalized = True

    def _write_run_json(self) -> None:
        """run.json, stamped with when this writer last wrote it (a reader that finds it still
        ``running`` tells a live writer from a dead one by this: see ``reader.run_state``)."""
        self.meta["writer"]["updated_epoch_s"] = now = epoch_ns() / 1e9
        self.meta["writer"]["updated_utc"] = utc_iso(now)
        write_json_atomic(self.dir / RUN_JSON, self.meta)

    def _replace_summary(self, rows: list[dict[str, Any]]) -> None:
        """run.json announces the new summary (the one on disk stays acceptable as
        ``previous``), then the summary is renamed into place: a reader, or a kill, between the
        two finds a summary run.json vouches for."""
        data, check = summary_csv_bytes(rows)
        on_disk = self.meta.get(SUMMARY_CHECK)
        previous = {k: on_disk[k] for k in ("rows", "sha256")} if on_disk else None
        tmp = self.dir / (SUMMARY_CSV + ".tmp")
        tmp.write_bytes(data)
        self.meta[SUMMARY_CHECK] = {**check, "previous": previous}
        self._write_run_json()
        os.replace(tmp, self.dir / SUMMARY_CSV)

    def flush_intervals(self, agg: Aggregate) -> None:
        """Write every pending second now (at the end, before the final fields are computed
        from :attr:`second_counts`)."""
        self._write_intervals(agg, None)

    def _write_intervals(self, agg: Aggregate, before_sec: int | None) -> None:
        for row, kind, sec, h in agg.take_intervals(before_sec):
            self._logs[kind].write(row, float(sec), 1.0, h)
            if kind != "lag":
                self.second_counts[sec] = self.second_counts.get(sec, 0) + h.get_total_count()
        for log in self._logs.values():
            log.flush()
