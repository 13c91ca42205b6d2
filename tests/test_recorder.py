"""The per-process recorder: making a report a slice at a time while the test runs
(``Recorder.prepare``) gives exactly the report made in one piece — histograms, counts, events
and the thinning of events over the cap."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from echoswarm import hdr
from echoswarm.measure import Sample, to_epoch_ns
from echoswarm.results.events import decode_batch
from echoswarm.results.recorder import Recorder

MS = 1_000_000
T0 = 1_000 * 1_000_000_000  # monotonic ns


def samples(n: int) -> list[Sample]:
    out = []
    for i in range(n):
        start = T0 + i * 7 * MS  # ~7 s in all for n = 1000
        error = "timeout: no reply within 1 s" if i % 97 == 0 else None
        name = "msg" if i % 3 else "connect"
        out.append(
            Sample("tcp", name, start, (1 + i % 50) * MS, 3200, error, i % 7, i % 11, i,
                   start, start + (i % 5) * 1000, 0 if error else start + (1 + i % 50) * MS)
        )  # fmt: skip
    return out


def report(rec: Recorder, prepare_every: int | None, feed: list[Sample]) -> dict[str, Any]:
    for i, s in enumerate(feed):
        rec.record(s)
        if prepare_every and i % prepare_every == 0:
            now_s = to_epoch_ns(s.start_ns) // 1_000_000_000
            while rec.prepare(now_s, max_events=40):
                pass
    return rec.harvest(wire=True)


def normalized(rep: dict[str, Any]) -> tuple[Any, ...]:
    hists = {
        (rt, name, kind, sec): hdr.decode(payload).get_total_count()
        for rt, name, kind, sec, payload in rep["hist"]
    }
    hists_p99 = {
        tuple(key): hdr.value_at_percentile_ms(hdr.decode(p), 99.0) for *key, p in rep["hist"]
    }
    table = pa.Table.from_batches([decode_batch(rep["events"], 0)]).sort_by(
        [("name", "ascending"), ("seq", "ascending")]
    )
    return (sorted(map(tuple, rep["rows"])), hists, hists_p99, table.to_pylist(),
            rep["events_rate"], rep["events_kept"], rep["events_offered"])  # fmt: skip


@pytest.mark.parametrize("cap", [60_000, 300])  # 300: thinned twice, with columns made
def test_a_report_made_in_slices_equals_one_made_at_once(cap: int) -> None:
    feed = samples(1000)
    whole = report(Recorder(max_events_per_report=cap), None, feed)
    sliced = report(Recorder(max_events_per_report=cap), 25, feed)
    assert normalized(sliced) == normalized(whole)
    if cap == 300:
        assert whole["events_rate"] < 1.0 and 0 < whole["events_kept"] < 300


def test_prepare_only_folds_closed_seconds_and_says_when_it_is_done() -> None:
    rec = Recorder()
    for s in samples(200):
        rec.record(s)
    last_s = to_epoch_ns(samples(200)[-1].start_ns) // 1_000_000_000
    steps = 0
    while rec.prepare(last_s, max_events=50):
        steps += 1
    assert steps > 3 and not rec.prepare(last_s, max_events=50)
    assert rec.pending() == 200  # counts are untouched until the harvest


def test_event_parts_are_arrow_files_read_and_consolidated_with_older_parquet_parts(
    tmp_path: Any,
) -> None:
    import pyarrow.parquet as pq

    from echoswarm.results.events import (
        EVENTS_FILE,
        SCHEMA,
        PartWriter,
        consolidate,
        read_events,
        row_batch,
    )

    older = tmp_path / "events.parts"
    older.mkdir()
    first = decode_batch([row_batch("tcp", "msg", samples(10), 1.0)], 1)
    pq.write_table(pa.Table.from_batches([first], schema=SCHEMA), older / "part-000000.parquet")
    parts = PartWriter(tmp_path)
    parts.write([decode_batch([row_batch("tcp", "msg", samples(30)[10:], 1.0)], 2)])
    assert sorted(p.name for p in older.iterdir()) == ["part-000000.parquet", "part-000001.arrow"]
    running = read_events(tmp_path)  # an unfinished run: the parts
    assert running.num_rows == 30 and running.column("worker").to_pylist()[9:11] == [1, 2]
    assert consolidate(tmp_path) == 30
    assert not older.exists() and pq.read_table(tmp_path / EVENTS_FILE).equals(running)
