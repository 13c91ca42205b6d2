"""The numbers a fault test records, computed from a results directory (``events.parquet``).

Definitions (docs/faults.md uses the same words):

* a message's **time** is its intended send time (``start_ns``; epoch seconds here), so a
  message counts in the second it was due, whatever happened to it;
* **rate** — successful echoes per second; the **baseline** is the rate over a window before
  the fault;
* **failed** — messages recorded with an error, by ``"<request_type> <name>: <error>"``;
  **failed seconds** = failed messages ÷ baseline rate: how many seconds of that load's
  messages were lost;
* **unrecorded seconds** — the longest stretch with no row at all from a worker while it should
  have been running: samples that never reached the results (a killed worker's last report, a
  worker that could not report), as opposed to messages recorded as failed;
* **back after** — seconds from the end of the fault to the start of the first second from
  which ``HOLD_S`` consecutive seconds each have at least 90 % of the baseline rate with a p90
  latency under ``NORMAL_P90_MS``: the load is back and on time.

:class:`Figures` collects named values, prints them (``pytest -s`` shows them) and, when
``ECHOSWARM_FAULT_FIGURES`` names a file, appends them there as one JSON line per test.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from echoswarm.results import read_events

HOLD_S = 3
NORMAL_P90_MS = 250.0
ENOUGH = 0.9


def events(run_dir: Path) -> pd.DataFrame:
    """Every event row with ``t`` (epoch s of the intended/start time), ``ok`` and
    ``latency_ms`` added."""
    df = read_events(run_dir).to_pandas()
    df["t"] = df["start_ns"] / 1e9
    df["ok"] = df["error"].isna()
    df["latency_ms"] = df["latency_ns"] / 1e6
    return df


def messages(df: pd.DataFrame) -> pd.DataFrame:
    """Per-message rows (names ending in ``msg``)."""
    return df[df["name"].str.endswith("msg")]


def connects(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["name"].str.endswith("connect")]


def between(df: pd.DataFrame, start: float, end: float) -> pd.DataFrame:
    return df[(df["t"] >= start) & (df["t"] < end)]


def rate(df: pd.DataFrame, start: float, end: float) -> float:
    """Successful messages per second due in [start, end)."""
    window = between(df, start, end)
    return float(window["ok"].sum()) / (end - start)


def failures(df: pd.DataFrame) -> dict[str, int]:
    """Failed rows by ``"<request_type> <name>: <error>"``."""
    bad = df[~df["ok"]]
    keys = bad["request_type"] + " " + bad["name"] + ": " + bad["error"]
    return {str(k): int(n) for k, n in keys.value_counts().sort_index().items()}


def per_second(df: pd.DataFrame, t0: float, t1: float) -> pd.DataFrame:
    """Whole seconds ``s`` from ``t0`` until ``t1`` (a last partial second is left out) →
    ``ok``, ``failed``, ``p90_ms`` of the ok messages."""
    n = int((t1 - t0) // 1)
    window = between(df, t0, t0 + n).assign(s=lambda d: ((d["t"] - t0) // 1).astype(int))
    out = pd.DataFrame(index=pd.RangeIndex(0, n, name="s"))
    grouped = window.groupby("s")
    out["ok"] = grouped["ok"].sum()
    out["failed"] = grouped["ok"].size() - out["ok"]
    out["p90_ms"] = window[window["ok"]].groupby("s")["latency_ms"].quantile(0.9)
    return out.fillna({"ok": 0, "failed": 0}).astype({"ok": int, "failed": int})


def back_after(df: pd.DataFrame, fault_end: float, baseline: float, until: float) -> float | None:
    """Seconds from ``fault_end`` until the load is back (see the module docstring); None if it
    never is before ``until``."""
    secs = per_second(df, fault_end, until)
    good = (secs["ok"] >= ENOUGH * baseline) & (secs["p90_ms"] < NORMAL_P90_MS)
    run = 0
    for s, is_good in zip(secs.index, good, strict=True):
        run = run + 1 if is_good else 0
        if run >= HOLD_S:
            return float(s - HOLD_S + 1)
    return None


def unrecorded_s(df: pd.DataFrame, start: float, end: float) -> float:
    """The longest stretch in [start, end) with no row of ``df`` (by intended/start time)."""
    ts = sorted(between(df, start, end)["t"])
    edges = [start, *ts, end]
    return max(b - a for a, b in zip(edges, edges[1:], strict=False))


class LateRepliesCountedOk(AssertionError):
    """Replies that came later than the reply timeout were recorded as successes."""


def late_ok(df: pd.DataFrame, timeout_s: float) -> int:
    """Messages recorded as ok although their reply came later than the reply timeout."""
    return int((df["ok"] & (df["latency_ms"] > timeout_s * 1000)).sum())


def check_no_late_ok(df: pd.DataFrame, timeout_s: float) -> None:
    """DESIGN.md: an echo that does not come back within the timeout is a failure."""
    n = late_ok(messages(df), timeout_s)
    if n:
        raise LateRepliesCountedOk(
            f"{n} replies later than the {timeout_s:g} s reply timeout were recorded as ok"
        )


def failed_seconds(df: pd.DataFrame, baseline: float) -> float:
    return float((~df["ok"]).sum()) / baseline if baseline else math.nan


@dataclass
class Figures:
    """Named figures of one fault test; :meth:`emit` prints them and appends them to
    ``$ECHOSWARM_FAULT_FIGURES`` (one JSON line) when that is set."""

    test: str
    values: dict[str, Any] = field(default_factory=dict)

    def __setitem__(self, name: str, value: Any) -> None:
        self.values[name] = _plain(value)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def update(self, items: Iterable[tuple[str, Any]] | dict[str, Any]) -> None:
        for k, v in dict(items).items():
            self[k] = v

    def emit(self) -> None:
        width = max((len(k) for k in self.values), default=0)
        lines = [f"== {self.test}"]
        lines += [f"  {k:<{width}}  {_show(v)}" for k, v in self.values.items()]
        print("\n".join(lines), flush=True)
        path = os.environ.get("ECHOSWARM_FAULT_FIGURES")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"test": self.test, **self.values}) + "\n")


def _plain(value: Any) -> Any:
    """Numbers rounded for a table; numpy scalars and frames turned into JSON types."""
    if isinstance(value, pd.DataFrame):
        return {str(k): _plain(v) for k, v in value.to_dict(orient="index").items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 2)
    return value


def _show(value: Any) -> str:
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        return "\n" + "\n".join(f"      {k}: {v}" for k, v in value.items())
    return str(value)
