"""The S000 side-by-side: one line per transport for the paced audio stream.

After ``python -m echoswarm demo`` (or any run of ``locustfiles/audio_stream.py``) this prints
the comparison the seed wanted — per transport: messages, failures, p50/p90/p99/p99.9/max
latency from the merged HDR histograms (measured from the intended send time), jitter of the
paced stream, sender lag p99 and connect time — and names the steadiest transport by p99.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

import analysis
from analysis.summaries import format_table, jitter_table
from echoswarm import hdr

MSG_ROWS = {"grpc": "bidi msg", "ws": "msg", "tcp": "msg"}


def comparison(run_dir: Path) -> pd.DataFrame:
    """The per-transport comparison table of a run (empty if it has no per-message rows)."""
    run = analysis.load(run_dir)
    summary = {(str(r["request_type"]), str(r["name"])): r for r in _records(run.summary)}
    jitter = {(str(r["request_type"]), str(r["name"])): r for r in _records(jitter_table(run))}
    rows = []
    for transport, name in MSG_ROWS.items():
        s = summary.get((transport, name))
        if s is None:
            continue
        lag = run.lag.get((transport, name))
        connect = summary.get((transport, "connect"), {})
        rows.append(
            {
                "transport": transport,
                "row": name,
                "messages": int(s["count"]),
                "failures": int(s["failures"]),
                "p50_ms": s["p50_ms"],
                "p90_ms": s["p90_ms"],
                "p99_ms": s["p99_ms"],
                "p999_ms": s["p999_ms"],
                "max_ms": s["max_ms"],
                "jitter_p99_ms": jitter.get((transport, name), {}).get("jitter_p99_ms"),
                "lag_p99_ms": hdr.percentiles_ms(lag, (99.0,))[99.0] if lag else math.nan,
                "connect_p50_ms": connect.get("p50_ms"),
            }
        )
    return pd.DataFrame(rows)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in df.to_dict("records")]


def render(run_dir: Path) -> str:
    table = comparison(run_dir)
    if table.empty:
        return "no per-message rows to compare"
    best = table.sort_values("p99_ms").iloc[0]
    lines = [
        "S000 — paced audio (3200 B every 100 ms): latency from the intended send time",
        format_table(table),
        f"steadiest by p99: {best['transport']} ({best['p99_ms']:.2f} ms)",
    ]
    return "\n".join(lines)
