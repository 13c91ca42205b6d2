"""The numbers a fault test records, computed from a results directory (``events.parquet``).

Definitions (docs/faults.md uses the same words):

* a message's **time** is its intended send time (``start_ns``; epoch seconds here), so a
  message counts in the second it was due, whatever happened to it;
* **rate** — successful echoes per second; the **baseline** is the rate over a window before
  the fault;
* **failed** — messages recorded with an error, by ``"<request_type> <name>: <error>"``;
  **failed seconds** = failed messages ÷ baseline rate: how many seconds of that load's
  messages were lost;
* **deficit seconds** — seconds of full load missing over a window: the per-second shortfall of
  successful messages below the baseline, summed, ÷ the baseline (whether lost, failed or never
  sent);
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
from collections.abc import Iterable, Iterator
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


def timeline(df: pd.DataFrame, t0: float, t1: float) -> dict[str, list[Any]]:
    """Per whole second from ``t0``: successful messages and their p90 latency (ms) — the
    shape of a fault, for the figures."""
    secs = per_second(df, t0, t1)
    return {
        "ok_per_s": [int(v) for v in secs["ok"]],
        "p90_ms": [None if pd.isna(v) else round(float(v)) for v in secs["p90_ms"]],
    }


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


def reconnect_delays(df: pd.DataFrame, start: float, end: float) -> list[float]:
    """For each successful connect in [start, end): seconds since the same user's stream broke
    (the last failure recorded for that worker and user before the connect: its time plus its
    latency, i.e. when it was settled). Connects with no failure before them are left out."""
    out = []
    fails = df[~df["ok"]].assign(settled=lambda d: d["t"] + d["latency_ms"] / 1000)
    for row in between(connects(df[df["ok"]]), start, end).itertuples():
        mine = fails[(fails["worker"] == row.worker) & (fails["user_id"] == row.user_id)]
        earlier = mine[mine["settled"] <= row.t]["settled"]
        if len(earlier):
            out.append(float(row.t - earlier.max()))
    return out


class RunJsonMisreports(AssertionError):
    """run.json's account of a worker that went missing disagrees with what happened."""


def check_gaps(run: dict[str, Any]) -> None:
    """Every gap record runs forward: its worker's last report before the loss, then the
    detection (``gap_s`` and ``detection_s`` are not negative)."""
    for gap in run.get("gaps") or []:
        for key in ("gap_s", "detection_s"):
            if gap.get(key) is not None and gap[key] < 0:
                raise RunJsonMisreports(f"gap of {gap['worker']}: {key} = {gap[key]:.1f} s")


class LoadNotAsRequested(AssertionError):
    """The run carried more or less load than the users asked for, and nothing says so."""


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


def deficit_seconds(df: pd.DataFrame, start: float, end: float, baseline: float) -> float:
    """Seconds of full load missing from [start, end): the per-second shortfall of successful
    messages below the baseline, summed, over the baseline (unrecorded and failed alike)."""
    secs = per_second(df, start, end)
    return float((baseline - secs["ok"]).clip(lower=0).sum()) / baseline if baseline else math.nan


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


def summarize(lines: Iterable[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    """Figures of several runs → test → figure → the values of each run (nested figures are
    flattened as ``outer.inner``)."""
    out: dict[str, dict[str, list[Any]]] = {}
    for line in lines:
        figs = out.setdefault(line["test"], {})
        for key, value in _flatten({k: v for k, v in line.items() if k != "test"}):
            figs.setdefault(key, []).append(value)
    return out


def _flatten(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if (
            isinstance(value, dict)
            and value
            and not all(isinstance(v, int) for v in value.values())
        ):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _range(values: list[Any]) -> str:
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(nums) == len(values) and nums:
        lo, hi = min(nums), max(nums)
        return f"{lo:g}" if lo == hi else f"{lo:g} – {hi:g}"
    shown = {json.dumps(v, sort_keys=True) for v in values}
    return " / ".join(sorted(shown))


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.fault_figures FIGURES.jsonl...``: each figure's range over the runs."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m tests.fault_figures")
    p.add_argument("files", nargs="+", type=Path, help="files written via ECHOSWARM_FAULT_FIGURES")
    args = p.parse_args(argv)
    lines = []
    for path in args.files:
        try:
            text = path.read_text()
        except OSError as exc:
            p.error(f"{path}: {exc.strerror}")
        lines += [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    for test, figs in summarize(lines).items():
        runs = max(len(v) for v in figs.values())
        print(f"\n{test} ({runs} run{'s' if runs > 1 else ''})")
        for key, values in figs.items():
            print(f"  {key}: {_range(values)}")
    return 0


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


if __name__ == "__main__":
    raise SystemExit(main())
