"""Figures the benchmarks print, computed one way for every client: nearest-rank percentiles
(a p99 is a value at least 99% of the samples do not exceed) and CPU per message."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def nearest_rank(sorted_values: Sequence[float], pct: float) -> float:
    """The smallest value that at least ``pct`` % of the samples do not exceed (NaN if none)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summary(
    latencies_ns: list[int], lags_ns: list[int], failures: int, cpu_s: float
) -> dict[str, Any]:
    """The one JSON shape of a paced measurement (ms and µs)."""
    lat = sorted(latencies_ns)
    lag = sorted(lags_ns)
    n = len(lat)
    return {
        "messages": n,
        "failures": failures,
        "p50_ms": nearest_rank(lat, 50) / 1e6,
        "p99_ms": nearest_rank(lat, 99) / 1e6,
        "max_ms": (lat[-1] / 1e6) if lat else math.nan,
        "lag_p50_ms": nearest_rank(lag, 50) / 1e6,
        "lag_p99_ms": nearest_rank(lag, 99) / 1e6,
        "cpu_s": cpu_s,
        "cpu_us_per_msg": cpu_s * 1e6 / n if n else math.nan,
    }
