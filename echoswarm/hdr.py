"""HDR histogram helpers shared by workers, the master and the readers.

Values are microseconds (``echoswarm.measure.HDR_*``: 1 µs … 60 s, 3 significant digits). Rows
are identified by ``(request_type, name)``; in interval logs a row is written as a *tag*
(``quote(request_type)/quote(name)``, percent-encoded so the tag holds no comma, space or slash
of its own, which HdrHistogram's log format forbids).

The interval log is HdrHistogram's standard text format (the one ``HistogramLogWriter`` writes
and Java's ``HistogramLogProcessor`` reads): ``Tag=T,start_s,length_s,max_ms,BASE64``, start
times relative to the ``#[StartTime: …]`` / ``#[BaseTime: …]`` header. The reader here tolerates
a torn last line (a writer killed mid-append) and reports what it skipped.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TextIO
from urllib.parse import quote, unquote

import numpy as np
from hdrh.codec import HdrHistogramEncoder
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogWriter

from echoswarm.measure import HDR_HIGHEST_US, HDR_LOWEST_US, HDR_SIGNIFICANT_DIGITS

Row = tuple[str, str]
"""(request_type, name)"""

PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_DIGITS)


def clamp_us(value_ns: int) -> int:
    """Nanoseconds → a µs value our histograms can hold (out-of-range values are pinned)."""
    us = value_ns // 1000
    if us < HDR_LOWEST_US:
        return HDR_LOWEST_US
    if us > HDR_HIGHEST_US:
        return HDR_HIGHEST_US
    return us


_LAYOUT = new_histogram()
_SUB_MASK = _LAYOUT.sub_bucket_mask
_UNIT = _LAYOUT.unit_magnitude
_HALF_MAG = _LAYOUT.sub_bucket_half_count_magnitude
_HALF = _LAYOUT.sub_bucket_half_count


def record_us(h: HdrHistogram, us: int) -> None:
    """``h.record_value(us)`` for an in-range value, with the index arithmetic inlined.

    The hot path records one or two values per sample; the library's method spends most of its
    time in helper calls (``_clz`` via ``bin()``). Same index formula, same bookkeeping.
    """
    bucket = (us | _SUB_MASK).bit_length() - _UNIT - _HALF_MAG - 1
    h.counts[((bucket + 1) << _HALF_MAG) + (us >> (bucket + _UNIT)) - _HALF] += 1
    h.total_count += 1
    if us < h.min_value:
        h.min_value = us
    if us > h.max_value:
        h.max_value = us


_POW2 = 1 << np.arange(63, dtype=np.int64)


def from_ns(values_ns: np.ndarray) -> HdrHistogram:
    """A histogram of nanosecond values (clamped to our µs range), built with numpy.

    The counts index is the library's formula (see :func:`record_us`), vectorized; the result
    is identical to recording each value (tested), at a fraction of the cost.
    """
    return add_ns(new_histogram(), values_ns)


def add_ns(h: HdrHistogram, values_ns: np.ndarray) -> HdrHistogram:
    """Record nanosecond values into ``h`` (as :func:`from_ns` does); returns ``h``."""
    if values_ns.size == 0:
        return h
    us = np.clip(values_ns // 1000, HDR_LOWEST_US, HDR_HIGHEST_US)
    bit_length = np.searchsorted(_POW2, us | _SUB_MASK, side="right")
    bucket = bit_length - _UNIT - _HALF_MAG - 1
    index = ((bucket + 1) << _HALF_MAG) + (us >> (bucket + _UNIT)) - _HALF
    counts(h)[:] += np.bincount(index, minlength=h.counts_len).astype(np.uint64)
    low, high = int(us.min()), int(us.max())
    if h.total_count == 0:
        h.min_value, h.max_value = low, high
    else:
        h.min_value, h.max_value = min(h.min_value, low), max(h.max_value, high)
    h.total_count += int(us.size)
    return h


def encode(h: HdrHistogram) -> str:
    """Compressed base64 form (HdrHistogram's standard V2 compressed encoding)."""
    return h.encode().decode("ascii")


def decode(payload: str | bytes) -> HdrHistogram:
    return HdrHistogram.decode(payload)


def tag_of(row: Row) -> str:
    return f"{quote(row[0], safe='')}/{quote(row[1], safe='')}"


def row_of(tag: str) -> Row:
    request_type, sep, name = tag.partition("/")
    if not sep:
        raise ValueError(f"not an echoswarm row tag: {tag!r}")
    return unquote(request_type), unquote(name)


@functools.cache
def _index_values(counts_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lowest, highest and median equivalent value (µs) of every counts index of our layout."""
    h = new_histogram()
    assert h.counts_len == counts_len
    low = np.array([h.get_value_from_index(i) for i in range(counts_len)], dtype=np.float64)
    high = np.array([h.get_highest_equivalent_value(int(v)) for v in low], dtype=np.float64)
    return low, high, low + np.floor((high - low + 1) / 2)


def counts(h: HdrHistogram) -> np.ndarray:
    return np.ctypeslib.as_array(h.counts)[: h.counts_len]


def target_count(p: float, total: int) -> int:
    """How many of ``total`` samples the p-th percentile must cover: ``ceil(p·total/100)``, at
    least 1 (the nearest-rank definition).

    The value reported for p is then one that at least p % of the samples do not exceed.
    HdrHistogram's own ``get_value_at_percentile`` rounds the target instead
    (``int(p·total/100 + 0.5)``), so on a sparse tail its p99 can cover fewer than 99 % of the
    samples (960 samples with 10 slow ones: its p99 is the fast body, nearest rank's the first
    slow one). ``p`` is taken as written (``99.9`` exactly, via its shortest repr), so float
    error cannot push the target up one (``33.3 × 100000 / 100`` is 33299.99… in floats).
    """
    if not 0.0 <= p <= 100.0:  # also refuses NaN
        raise ValueError(f"percentile {p!r} is outside 0..100")
    return max(1, math.ceil(Fraction(repr(float(p))) * total / 100))


def _values_us(h: HdrHistogram, pcts: list[float]) -> list[float]:
    low, high, _mid = _index_values(h.counts_len)
    cum = np.cumsum(counts(h))
    total = int(cum[-1])
    out = []
    for p in pcts:
        i = int(np.searchsorted(cum, target_count(p, total)))  # first bucket reaching the target
        out.append(float(high[i] if p else low[i]))
    return out


def percentiles_ms(h: HdrHistogram, pcts: Iterable[float] = PERCENTILES) -> dict[float, float]:
    """Percentile → milliseconds (NaN for an empty histogram), by nearest rank.

    The value is the highest value equivalent to the bucket holding the
    :func:`target_count`-th smallest sample (for p = 0: the lowest value of the first bucket,
    i.e. the minimum), so p100 is the maximum and, within the histogram's 3-significant-digit
    buckets, at least p % of the samples are at or below the value. Vectorized: the library
    walks every bucket in Python, which costs milliseconds per call — too slow to run every few
    seconds per row. Every percentile echoswarm reports (summary.csv, the live table, SLOs, the
    report, compare) goes through here or :func:`value_at_percentile_ms`.
    """
    pcts = list(pcts)
    if h.get_total_count() == 0:
        _index_values(h.counts_len)  # built (~35 ms) here too, so callers can warm it up early
        for p in pcts:
            target_count(p, 0)  # same validation as for a filled histogram
        return {p: float("nan") for p in pcts}
    return {p: v / 1000.0 for p, v in zip(pcts, _values_us(h, pcts), strict=True)}


def value_at_percentile_ms(h: HdrHistogram, p: float) -> float:
    """One percentile in milliseconds (NaN when empty); see :func:`percentiles_ms`.

    Use this instead of ``h.get_value_at_percentile(p)``, whose rounding is not nearest rank.
    """
    return percentiles_ms(h, (p,))[p]


def mean_stdev_ms(h: HdrHistogram) -> tuple[float, float]:
    """Mean and standard deviation (ms) over bucket midpoints, as HdrHistogram defines them."""
    total = h.get_total_count()
    if total == 0:
        return float("nan"), float("nan")
    _low, _high, mid = _index_values(h.counts_len)
    c = counts(h).astype(np.float64)
    mean = float((c * mid).sum() / total)
    var = float((c * (mid - mean) ** 2).sum() / total)
    return mean / 1000.0, math.sqrt(var) / 1000.0


def spectrum_levels(total: int, ticks_per_half_distance: int = 5) -> list[float]:
    """HdrHistogram's percentile-spectrum levels: from 0, each step closes 1/(2·ticks) of the
    remaining distance to 100 %, until one more sample would be past the end; then 100."""
    if total <= 0:
        return []
    levels, pct = [], 0.0
    while (100.0 - pct) * total / 100.0 >= 1.0:
        levels.append(pct)
        pct += (100.0 - pct) / (2 * ticks_per_half_distance)
    return [*levels, 100.0]


def spectrum(h: HdrHistogram, ticks_per_half_distance: int = 5) -> list[tuple[float, float, int]]:
    """Percentile spectrum: (percentile, value_ms, samples ≤ value) rows at HdrHistogram's
    levels (:func:`spectrum_levels`), each value by nearest rank as in :func:`percentiles_ms`.

    The levels are coarse on purpose (10 % steps below the median at 5 ticks): this is the
    "latency by percentile" plot's data, not a CDF. For a CDF at full resolution see
    :func:`cdf_points`.
    """
    total = h.get_total_count()
    if total == 0:
        return []
    levels = spectrum_levels(total, ticks_per_half_distance)
    values = _values_us(h, levels)
    low, high, _mid = _index_values(h.counts_len)
    cum = np.cumsum(counts(h))
    # samples at or below each value: the cumulative count of the bucket holding it
    covered = cum[np.searchsorted(high, values)]
    return [
        (p, v / 1000.0, int(c)) for p, v, c in zip(levels, values, covered.tolist(), strict=True)
    ]


def cdf_points(h: HdrHistogram) -> tuple[np.ndarray, np.ndarray]:
    """The histogram's CDF at full resolution: for every non-empty bucket, its highest
    equivalent value (ms) and the fraction of samples at or below it (empty arrays when the
    histogram is)."""
    c = counts(h)
    nz = np.flatnonzero(c)
    if nz.size == 0:
        return np.empty(0), np.empty(0)
    _low, high, _mid = _index_values(h.counts_len)
    cum = np.cumsum(c)
    return high[nz] / 1000.0, cum[nz] / float(cum[-1])


class IntervalLogWriter:
    """Append-only interval log; each write is flushed so a killed process loses little."""

    def __init__(self, path: Path, start_epoch_s: float, comment: str = "") -> None:
        self.path = path
        # Whole second: intervals are whole seconds, and readers skip any starting before this.
        self.start_epoch_s = start_epoch_s = float(int(start_epoch_s))
        fresh = not path.exists() or path.stat().st_size == 0
        self._file: TextIO = path.open("a", encoding="ascii")
        self._writer = HistogramLogWriter(self._file)
        if fresh:
            if comment:
                self._writer.output_comment(comment)
            self._writer.output_log_format_version()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_epoch_s))
            self._file.write(f"#[StartTime: {start_epoch_s:.3f} (seconds since epoch), {stamp}]\n")
            # Absolute interval timestamps (BaseTime 0): workers' clocks may differ a little
            # from the master's, and the format's readers accept no negative relative times.
            self._writer.output_base_time(0.0)
            self._writer.output_legend()
            self._file.flush()

    def write(self, row: Row, start_epoch_s: float, length_s: float, h: HdrHistogram) -> None:
        max_ms = h.get_max_value() / 1000.0
        self._file.write(
            f"Tag={tag_of(row)},{start_epoch_s:.3f},{length_s:.3f},{max_ms:.3f},{encode(h)}\n"
        )

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


@dataclass
class Interval:
    """One interval line; the histogram stays encoded (a decoded one holds ~140 KB of
    counters, and an hour-long run has ~10^5 intervals) until :meth:`histogram` is called."""

    row: Row
    start_epoch_s: float
    length_s: float
    payload: str

    def histogram(self) -> HdrHistogram:
        return decode(self.payload)

    def add_to(self, total: HdrHistogram) -> None:
        total.decode_and_add(self.payload)


@dataclass
class IntervalLog:
    start_epoch_s: float | None
    intervals: list[Interval] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "line N: why" for lines that failed


def read_interval_log(path: Path) -> IntervalLog:
    """Parse an interval log written by :class:`IntervalLogWriter` (or any tagged hlog).

    Raises ``OSError`` if the file cannot be read and ``ValueError`` if it has no valid header or
    interval line at all; a bad line elsewhere (typically the torn last line of a killed
    writer) is skipped and listed in ``skipped``.
    """
    start: float | None = None
    base: float | None = None
    log = IntervalLog(None)
    valid = 0
    with path.open(encoding="ascii", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("#[StartTime:"):
                start = _header_seconds(line)
                valid += 1
                continue
            if line.startswith("#[BaseTime:"):
                base = _header_seconds(line)
                continue
            if line.startswith("#") or line.startswith('"'):
                valid += line.startswith("#[Histogram log format")
                continue
            if base is None:
                base = _implied_base(line, start)
            try:
                log.intervals.append(_parse_interval(line, base))
                valid += 1
            except Exception as exc:  # the codec raises several types on a torn payload
                log.skipped.append(f"line {lineno}: {exc}")
    if not valid:
        raise ValueError("not an HdrHistogram interval log (no header or interval lines)")
    log.start_epoch_s = start if start is not None else base
    return log


def _implied_base(line: str, start: float | None) -> float:
    # As the format specifies: without a BaseTime, timestamps far below the StartTime are
    # relative to it, others absolute.
    try:
        first = float(line.split(",", 2)[1] if line.startswith("Tag=") else line.split(",", 1)[0])
    except (ValueError, IndexError):
        return 0.0
    return start if start is not None and first < start - 365 * 86400 else 0.0


def _header_seconds(line: str) -> float:
    return float(line.split(":", 1)[1].strip().split()[0].rstrip(","))


def _parse_interval(line: str, base: float) -> Interval:
    if not line.startswith("Tag="):
        raise ValueError("untagged interval (not written by echoswarm)")
    tag, rest = line[4:].split(",", 1)
    start_s, length_s, _max, payload = rest.split(",", 3)
    payload = payload.strip()
    HdrHistogramEncoder.decode(payload)  # validates (base64, cookie, zlib) without the counters
    return Interval(row_of(tag), base + float(start_s), float(length_s), payload)


def merge_intervals(intervals: Iterable[Interval]) -> dict[Row, HdrHistogram]:
    """Sum intervals per row (the whole run's histogram per request row)."""
    merged: dict[Row, HdrHistogram] = {}
    for iv in intervals:
        total = merged.get(iv.row)
        if total is None:
            total = merged[iv.row] = new_histogram()
        iv.add_to(total)
    return merged


def iter_sorted(intervals: Iterable[Interval]) -> Iterator[Interval]:
    return iter(sorted(intervals, key=lambda iv: (iv.start_epoch_s, iv.row)))
