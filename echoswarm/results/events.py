"""Per-event records: Arrow batches on the wire, Parquet on disk.

Workers turn a report interval's samples into one Arrow IPC stream (compressed, a few hundred KB
for tens of thousands of events) — the master only appends a ``worker`` column and writes it.
While a run is going the master writes complete part files (``events.parts/part-NNNNNN.parquet``,
written under a temporary name and renamed, so a killed master never leaves a torn one); at the
end they are streamed into one ``events.parquet`` (bounded memory) and the parts removed. The
reader takes ``events.parquet`` if present, else the parts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from operator import attrgetter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from echoswarm.measure import Sample, to_epoch_ns

EVENTS_FILE = "events.parquet"
PARTS_DIR = "events.parts"
_OFFSET_NS = to_epoch_ns(0)

WIRE_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("conn_id", pa.int64()),
        ("seq", pa.int64()),
        ("request_type", pa.string()),
        ("name", pa.string()),
        ("start_ns", pa.int64()),  # epoch ns; the intended send time for scheduled messages
        ("intended_ns", pa.int64()),  # epoch ns, null when not a scheduled message
        ("sent_ns", pa.int64()),  # epoch ns, null when unknown
        ("received_ns", pa.int64()),  # epoch ns, null when no (valid) reply
        ("latency_ns", pa.int64()),
        ("bytes", pa.int64()),
        ("error", pa.string()),  # null when ok
        ("sample_rate", pa.float64()),  # fraction of this row's samples kept as events
    ]
)
SCHEMA = pa.schema([pa.field("worker", pa.int32()), *WIRE_SCHEMA])
_ROWS_PER_GROUP = 500_000
_PART_OPTIONS = ipc.IpcWriteOptions(compression="zstd")


_INT_FIELDS = (
    "user_id",
    "conn_id",
    "seq",
    "start_ns",
    "intended_ns",
    "sent_ns",
    "received_ns",
    "latency_ns",
    "nbytes",
)
_GETTERS = {f: attrgetter(f) for f in (*_INT_FIELDS, "error")}


def _ints(samples: Sequence[Sample], name: str) -> np.ndarray:
    return np.fromiter(map(_GETTERS[name], samples), np.int64, len(samples))


def row_batch(
    request_type: str, name: str, samples: Sequence[Sample], rate: float
) -> pa.RecordBatch:
    return with_rate(event_columns(request_type, name, samples), rate)


def with_rate(columns: list[pa.Array], rate: float) -> pa.RecordBatch:
    """Columns of :func:`event_columns` plus the ``sample_rate`` column → a wire-schema batch."""
    n = len(columns[0])
    return pa.RecordBatch.from_arrays(
        [*columns, pa.array(np.full(n, rate, np.float64))], schema=WIRE_SCHEMA
    )


def event_columns(request_type: str, name: str, samples: Sequence[Sample]) -> list[pa.Array]:
    """Every wire-schema column but ``sample_rate`` (known only when the report is made) for
    these samples — the recorder builds them in slices while the test runs."""
    n = len(samples)
    arrays: list[pa.Array] = [pa.array(_ints(samples, f)) for f in ("user_id", "conn_id", "seq")]
    arrays += [pa.repeat(pa.scalar(request_type), n), pa.repeat(pa.scalar(name), n)]
    arrays.append(pa.array(_ints(samples, "start_ns") + _OFFSET_NS))
    for f in ("intended_ns", "sent_ns", "received_ns"):  # monotonic → epoch; 0 means "none"
        mono = _ints(samples, f)
        arrays.append(pa.array(mono + _OFFSET_NS, mask=mono == 0))
    arrays += [pa.array(_ints(samples, "latency_ns")), pa.array(_ints(samples, "nbytes"))]
    errors = list(map(_GETTERS["error"], samples))
    arrays.append(
        pa.nulls(n, pa.string()) if errors.count(None) == n else pa.array(errors, pa.string())
    )
    return arrays


def row_batches(
    groups: Iterable[tuple[str, str, Sequence[Sample]]], sample_rate: float = 1.0
) -> list[pa.RecordBatch]:
    """Samples, grouped per (request_type, name) → one RecordBatch per group (wire schema).

    Runs once per report, column by column (about half a microsecond per event), so the hot
    path only ever appends the Sample object it was given.
    """
    return [row_batch(rt, name, samples, sample_rate) for rt, name, samples in groups if samples]


def encode_batches(batches: Iterable[pa.RecordBatch]) -> bytes:
    """Row batches as one compressed Arrow IPC stream (what a worker ships)."""
    sink = pa.BufferOutputStream()
    options = ipc.IpcWriteOptions(compression="zstd")
    with ipc.new_stream(sink, WIRE_SCHEMA, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def encode_batch(
    groups: Iterable[tuple[str, str, Sequence[Sample]]], sample_rate: float = 1.0
) -> bytes:
    """Grouped samples straight to the wire form (:func:`row_batches` + :func:`encode_batches`)."""
    return encode_batches(row_batches(groups, sample_rate))


def warm_up() -> None:
    """Encode one dummy event: pyarrow's first use costs ~0.2 s, which must not land mid-test."""
    encode_batch([("warm", "up", [Sample("warm", "up", 1, 1)])])


def decode_batch(payload: bytes | Sequence[pa.RecordBatch], worker: int) -> pa.RecordBatch:
    """A worker's IPC stream (or, in a local run, its batches) → one RecordBatch with the
    ``worker`` column in front."""
    if isinstance(payload, bytes):
        table = ipc.open_stream(pa.py_buffer(payload)).read_all()
    else:
        table = pa.Table.from_batches(list(payload), schema=WIRE_SCHEMA)
    if table.schema != WIRE_SCHEMA:
        raise ValueError("events batch has an unexpected schema (worker running other code?)")
    table = table.combine_chunks()
    workers = pa.array(np.full(table.num_rows, worker, np.int32))
    arrays = [workers, *(table.column(i).combine_chunks() for i in range(table.num_columns))]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


class PartWriter:
    """Writes complete part files into ``run_dir/events.parts`` while the run goes on.

    Parts are Arrow IPC files with zstd-compressed buffers, not Parquet: for one report
    interval of events (7,200 at 2,400 messages/s) Parquet's encoding took ~6-9 ms of CPU, an
    Arrow file ~1.8 ms, and is smaller too — CPU the load-generating machine needs for its
    messages. The final ``events.parquet`` is written from the parts once, at the end.
    """

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / PARTS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rows = 0
        self.parts = 0
        existing = sorted(self.dir.glob("part-*.parquet")) if self.dir.exists() else []
        self._next = len(existing)

    def write(self, batches: Sequence[pa.RecordBatch]) -> None:
        if not batches:
            return
        table = pa.Table.from_batches(batches, schema=SCHEMA)
        if table.num_rows == 0:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"part-{self._next:06d}.arrow"
        tmp = final.with_suffix(".tmp")
        with ipc.new_file(str(tmp), SCHEMA, options=_PART_OPTIONS) as writer:
            writer.write_table(table)
        os.replace(tmp, final)
        self._next += 1
        self.parts += 1
        self.rows += table.num_rows


def part_files(run_dir: Path) -> list[Path]:
    """The parts written so far, in order (Arrow files; Parquet from older runs)."""
    d = run_dir / PARTS_DIR
    if not d.is_dir():
        return []
    return sorted([*d.glob("part-*.arrow"), *d.glob("part-*.parquet")], key=lambda p: p.stem)


def read_part(part: Path) -> pa.Table:
    if part.suffix == ".arrow":
        table = ipc.open_file(str(part)).read_all()
        if table.schema != SCHEMA:
            raise pa.ArrowInvalid("unexpected schema")
        return table
    return pq.read_table(part, schema=SCHEMA)


def consolidate(run_dir: Path) -> int:
    """Stream every part into ``events.parquet`` (atomically) and remove the parts; rows."""
    final = run_dir / EVENTS_FILE
    tmp = run_dir / (EVENTS_FILE + ".tmp")
    parts = part_files(run_dir)
    rows = 0
    with pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as writer:
        pending: list[pa.Table] = []
        pending_rows = 0
        for part in parts:
            t = read_part(part)
            pending.append(t)
            pending_rows += t.num_rows
            if pending_rows >= _ROWS_PER_GROUP:
                writer.write_table(pa.concat_tables(pending), row_group_size=_ROWS_PER_GROUP)
                rows += pending_rows
                pending, pending_rows = [], 0
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=_ROWS_PER_GROUP)
            rows += pending_rows
    os.replace(tmp, final)
    for part in parts:
        part.unlink()
    parts_dir = run_dir / PARTS_DIR
    if parts_dir.is_dir():
        for leftover in parts_dir.glob("*.tmp"):
            leftover.unlink()
        parts_dir.rmdir()
    return rows


def read_events(run_dir: Path) -> pa.Table:
    """All events of a run (consolidated file, or the parts of an unfinished run).

    Raises ``FileNotFoundError`` when there is neither, and ``pyarrow.ArrowInvalid`` /
    ``OSError`` when a file is corrupt (callers name the file).
    """
    final = run_dir / EVENTS_FILE
    if final.is_file():
        return pq.read_table(final, schema=SCHEMA)
    parts = part_files(run_dir)
    if not parts and not (run_dir / PARTS_DIR).is_dir():
        raise FileNotFoundError(str(final))
    tables = []
    for part in parts:
        try:
            tables.append(read_part(part))
        except (pa.ArrowInvalid, OSError) as exc:
            raise type(exc)(f"{part}: {exc}") from exc
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()
