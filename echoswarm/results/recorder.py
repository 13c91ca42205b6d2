"""Per-process recording: samples → per-second HDR histograms + an events batch → a *report*.

This is the hot path (every sample of every worker passes through :meth:`Recorder.record`), so
it does the least possible per sample: a dict lookup, one or two ``array.append`` calls, a few
integer additions and (when the sampling accumulator says so) one list append of the Sample
object itself. Everything else — column building, Arrow encoding, histogram encoding — happens
once per report (every few seconds) in :meth:`Recorder.harvest`.

A *report* is a msgpack-able dict (Locust ships it inside its own worker report):

``{"v": 1, "final": bool, "rows": [[request_type, name, count, failures, ok_sum_ns, bytes]],
"hist": [[request_type, name, kind, epoch_second, base64]], "events": bytes | None,
"events_rate": float, "events_offered": int, "events_kept": int}``

``kind`` is ``latency`` (successful samples), ``failed`` (failed samples' latency, so their
count per second is known) or ``lag`` (sender lag of scheduled messages). Histograms are per
epoch second of the sample's *completion* (start + latency), so timelines from different workers
line up.

Event sampling is explicit: the user's ``--events-sample-rate`` keeps a deterministic fraction
(an accumulator, not a coin), and if a report interval would exceed the per-process cap the
batch is thinned by halves and the applied rate goes down with it — the rate travels with every
batch and lands in each event row and in ``run.json``; nothing is dropped silently.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from hdrh.histogram import HdrHistogram

from echoswarm import hdr
from echoswarm.measure import Sample, now_ns, to_epoch_ns
from echoswarm.results.events import encode_batches, event_columns, with_rate

REPORT_VERSION = 1
KINDS = ("latency", "failed", "lag")
_EPOCH_OFFSET_NS = to_epoch_ns(0)
_NS = 1_000_000_000


@dataclass(slots=True)
class _Second:
    # Raw nanosecond values, folded into HDR histograms with numpy (an array append is ~10x
    # cheaper than a pure-Python HDR record); ``folded`` holds what :meth:`Recorder.prepare`
    # has folded already while the test ran.
    latency: array[int] | None = None
    failed: array[int] | None = None
    lag: array[int] | None = None
    folded: dict[str, HdrHistogram] | None = None


@dataclass(slots=True)
class _Row:
    count: int = 0
    failures: int = 0
    ok_sum_ns: int = 0
    nbytes: int = 0
    sec: int = -1
    cur: _Second = field(default_factory=_Second)
    seconds: dict[int, _Second] = field(default_factory=dict)
    events: list[Sample] = field(default_factory=list)
    # Kept events already turned into Arrow columns by :meth:`Recorder.prepare` (in order, before
    # ``events``); the sample_rate column is added when the report is made.
    columns: list[list[pa.Array]] = field(default_factory=list)
    converted: int = 0  # events in ``columns``


class Recorder:
    """Accumulates samples of one process between reports."""

    def __init__(self, sample_rate: float = 1.0, max_events_per_report: int = 60_000) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"events sample rate must be within 0..1, got {sample_rate}")
        self.requested_rate = sample_rate
        self.max_events = max(1, max_events_per_report)
        self._rate = sample_rate
        self._acc = 0.0
        self._rows: dict[tuple[str, str], _Row] = {}
        self._kept = 0
        self._offered = 0

    # -- hot path ---------------------------------------------------------------------------
    def record(self, s: Sample) -> None:
        key = (s.request_type, s.name)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = _Row()
        sec = (s.start_ns + s.latency_ns + _EPOCH_OFFSET_NS) // _NS
        if sec != row.sec:
            cur = row.seconds.get(sec)
            if cur is None:
                cur = row.seconds[sec] = _Second()
            row.sec, row.cur = sec, cur
        cur = row.cur
        row.count += 1
        row.nbytes += s.nbytes
        if s.error is None:
            row.ok_sum_ns += s.latency_ns
            a = cur.latency
            if a is None:
                a = cur.latency = array("q")
            a.append(s.latency_ns)
            if s.intended_ns and s.sent_ns:
                lag = cur.lag
                if lag is None:
                    lag = cur.lag = array("q")
                lag.append(s.sent_ns - s.intended_ns)
        else:
            row.failures += 1
            f = cur.failed
            if f is None:
                f = cur.failed = array("q")
            f.append(s.latency_ns)
        self._offered += 1
        self._acc += self._rate
        if self._acc >= 1.0:
            self._acc -= 1.0
            row.events.append(s)
            self._kept += 1
            if self._kept >= self.max_events:
                self._thin()

    def _thin(self) -> None:
        # Over the cap for this interval: keep every other event and halve the rate, so the
        # whole batch stays a uniform sample at the (recorded) rate. Events already converted
        # to columns are thinned the same way, counting positions across columns and list.
        kept = 0
        for row in self._rows.values():
            at = 0
            thinned = []
            for cols in row.columns:
                n = len(cols[0])
                take = pa.array(np.arange((1 - at) % 2, n, 2))
                thinned.append([c.take(take) for c in cols])
                at += n
            row.columns = [c for c in thinned if len(c[0])]
            row.converted = sum(len(c[0]) for c in row.columns)
            row.events = row.events[(1 - at) % 2 :: 2]
            kept += row.converted + len(row.events)
        self._kept = kept
        self._rate /= 2.0

    # -- in slices, while the test runs -----------------------------------------------------
    def prepare(self, now_epoch_s: int, max_events: int = 500) -> bool:
        """Do one slice of the report's work ahead of time: fold one closed second's raw values
        into histograms, or turn up to ``max_events`` kept events into Arrow columns. True when
        there was something to do (call again), False when nothing is left for now.

        The load-generating process calls this a slice at a time between its sends, so making a
        report costs milliseconds instead of tens of milliseconds in one piece — a pause every
        report interval that every message due in it would have waited for.
        """
        for row in self._rows.values():
            for sec, hs in row.seconds.items():
                if sec < now_epoch_s and (hs.latency or hs.failed or hs.lag):
                    _fold(hs)
                    return True
        for (rt, name), row in self._rows.items():
            if len(row.events) >= max_events:
                chunk = row.events[:max_events]
                del row.events[:max_events]
                row.columns.append(event_columns(rt, name, chunk))
                row.converted += len(chunk)
                return True
        return False

    # -- once per report --------------------------------------------------------------------
    def pending(self) -> int:
        """Samples recorded since the last harvest."""
        return sum(r.count for r in self._rows.values())

    def harvest(
        self, final: bool = False, wire: bool = True, pause: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Everything recorded since the last harvest, as a report; resets the interval.

        ``wire=False`` (a local run, merged in the same process) leaves the histograms as
        objects and the events as Arrow batches instead of encoding them. ``pause`` (e.g.
        ``gevent.sleep(0)``) is called between pieces of work so the load-generating greenlets
        are not held up for the whole encoding; samples recorded meanwhile go to the next
        report, because the interval's state is swapped out first.
        """
        taken, self._rows = self._rows, {}
        batch_rate, kept, offered = self._rate, self._kept, self._offered
        self._kept = self._offered = 0
        # The next interval starts from at most twice the applied rate, so one burst does not
        # cost the rest of the run its events, while steady overload settles at one halving.
        self._rate = min(self.requested_rate, self._rate * 2.0)
        rows = []
        hists = []
        batches = []
        for (rt, name), row in taken.items():
            if not row.count:
                continue
            rows.append([rt, name, row.count, row.failures, row.ok_sum_ns, row.nbytes])
            for sec, hs in row.seconds.items():
                for kind, h in _fold(hs).items():
                    hists.append([rt, name, kind, sec, hdr.encode(h) if wire else h])
            if pause is not None:
                pause()
            if row.events:
                row.columns.append(event_columns(rt, name, row.events))
            batches += [with_rate(cols, batch_rate) for cols in row.columns]
            if pause is not None and row.columns:
                pause()
        events: bytes | list[pa.RecordBatch] | None = None
        if batches:
            events = encode_batches(batches) if wire else batches
        return {
            "v": REPORT_VERSION,
            "final": final,
            "rows": rows,
            "hist": hists,
            "events": events,
            "events_rate": batch_rate,
            "events_offered": offered,
            "events_kept": kept,
        }


def _fold(hs: _Second) -> dict[str, HdrHistogram]:
    """Fold a second's raw values into its histograms (kept on ``hs.folded``); returns them."""
    folded = hs.folded
    if folded is None:
        folded = hs.folded = {}
    for kind in KINDS:
        values = getattr(hs, kind)
        if values:
            h = folded.get(kind)
            raw = np.frombuffer(values, dtype=np.int64)
            folded[kind] = hdr.from_ns(raw) if h is None else hdr.add_ns(h, raw)
            setattr(hs, kind, None)
    return folded


def foreign_sample(
    request_type: str,
    name: str,
    response_time: float | None,
    response_length: int | None,
    exception: BaseException | None,
    start_time: float | None,
) -> Sample:
    """A Sample for a request fired by some other Locust user (no ``sample`` kwarg)."""
    latency_ns = int((response_time or 0.0) * 1e6)
    if start_time:
        start_ns = int(start_time * 1e9) - _EPOCH_OFFSET_NS
    else:
        start_ns = now_ns() - latency_ns
    error = None if exception is None else (str(exception) or type(exception).__name__)
    return Sample(request_type, name, start_ns, latency_ns, int(response_length or 0), error)
