"""The S004 sweep's table, verdicts and plot (concurrent uploads × rq workers, 0 = inline), from
a finished sweep.

Columns (per uploads × workers): uploads answered; *all answered after* — first upload sent →
last answer received (the seed's "≈ 50 s until all answered"); *first* and *slowest job* — the
shortest and longest upload → answer time (the seed's "first ≈ 20 s", "slowest job 25.4 s");
per-job p50/p99 (rows ``native`` / ``job``, from merged HDR histograms); for the queue, rq's own
queue wait and run time p50. All in seconds. The notes compare each worker count with inline at
the same number of uploads, and say what the machine's cores allow: a CPU-bound batch cannot
finish sooner than its total CPU time divided by the cores. The cells are run by
:mod:`echoswarm.sweep.jobs`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.sweeps import common as st
from analysis.sweeps.common import CellRun
from echoswarm.sweep.jobs import row_name

HEADERS = {
    "uploads": "uploads",
    "workers_label": "workers",
    "status": "status",
    "answered": "answered",
    "errors": "errors",
    "all_s": "all answered after (s)",
    "first_s": "first job (s)",
    "slowest_s": "slowest job (s)",
    "p50_s": "per-job p50 (s)",
    "p99_s": "per-job p99 (s)",
    "wait_p50_s": "queue wait p50 (s)",
    "run_p50_s": "run p50 (s)",
}


def _s(value: float) -> float:
    return value / 1000.0 if not math.isnan(value) else math.nan


def table(cells: list[CellRun], plan: dict[str, Any]) -> pd.DataFrame:
    records = []
    for o in cells:
        n, w = int(o.key["uploads"]), int(o.key["workers"])
        rows = st.summary_rows(o.results)
        name = row_name(w)
        row = rows.get(name)
        ok = st.count(row) - st.count(row, "failures")
        ev = st.events(o.results)
        records.append(
            {
                "uploads": n,
                "workers": w,
                "rep": int(o.key.get("rep", 1)),
                "workers_label": "inline" if w == 0 else str(w),
                "status": o.status,
                "answered": f"{ok}/{n}",
                "errors": sum(int(r.get("failures") or 0) for r in rows.values()),
                "all_s": st.span_s(ev, name, name),  # a job row starts at its submit
                "first_s": _s(st.fig(row, "min_ms")),
                "slowest_s": _s(st.fig(row, "max_ms")),
                "p50_s": _s(st.fig(row, "p50_ms")),
                "p99_s": _s(st.fig(row, "p99_ms")),
                "wait_p50_s": _s(st.fig(rows.get("queue wait"), "p50_ms")),
                "run_p50_s": _s(st.fig(rows.get("run"), "p50_ms")),
                "ok_uploads": ok,
                "top_error": st.top_error(ev),
                "cell_s": round(o.wall_s, 1),
                "results": str(o.results),
            }
        )
    return pd.DataFrame.from_records(records)


def verdicts(df: pd.DataFrame, cpu_ms: float, cpus: int) -> list[str]:
    """Per uploads level: each worker count against inline (medians over repeats, done cells
    only), then the CPU floor the cores allow."""
    out = []
    for n, level in df.groupby("uploads", sort=False):
        done = level[level["status"] == "done"]
        med: dict[Any, dict[Any, Any]] = (
            done.groupby("workers")[["all_s", "slowest_s"]].median().to_dict("index")
        )
        runs = int(done.groupby("workers")["all_s"].count().max() or 0)
        if 0 not in med or len(med) < 2:
            out.append(f"- {n} uploads: no verdict (needs inline and a queue cell done).")
            continue
        base, slow = float(med[0]["all_s"]), float(med[0]["slowest_s"])
        parts, wins = [], []
        for w, row in med.items():
            if w == 0:
                continue
            all_s = float(row["all_s"])
            ratio = base / all_s if all_s else math.nan
            parts.append(
                f"{st.fmt(all_s)} s with {w} workers ({st.fmt(ratio)}× "
                f"{'sooner' if ratio >= 1 else 'later'}; slowest job "
                f"{st.fmt(float(row['slowest_s']))} s)"
            )
            if all_s < base:
                wins.append(str(w))
        winner = (
            f"the queue finishes sooner (with {', '.join(wins)} workers)"
            if wins
            else "inline finishes first"
        )
        floor = float(level["uploads"].iloc[0]) * cpu_ms / 1000.0 / max(cpus, 1)
        out.append(
            f"- {n} uploads: {winner} — all answered after {st.fmt(base)} s inline "
            f"(slowest job {st.fmt(slow)} s) vs "
            + ", ".join(parts)
            + (f" (medians of {runs} runs)" if runs > 1 else "")
            + f"; CPU floor on {cpus} CPUs {st.fmt(floor)} s."
        )
    return out


def render(df: pd.DataFrame, sweep_dir: Path, plan: dict[str, Any]) -> list[Path]:
    cpu_ms = float(plan["job_cpu_ms"])
    cpus = int(plan.get("cpus") or 1)  # the machine the sweep ran on
    notes = [
        "Times in seconds. all answered after = first upload sent → last answer received;",
        "first / slowest job = shortest / longest upload → answer; per-job p50/p99 from merged",
        "HDR histograms (rows native / job); queue wait and run from rq's own timestamps.",
        f"Every answer was checked (the tone's frequency). Each job costs {cpu_ms:g} ms of CPU;",
        f"this machine has {cpus} CPUs shared by the API, Redis, the workers and Locust, so no",
        "number of workers can finish N jobs sooner than N × job CPU / CPUs (the CPU floor):",
        f"beyond {cpus} busy workers, more workers only share the same cores.",
        "",
        *verdicts(df, cpu_ms, cpus),
    ]
    headers = {"rep": "run", **HEADERS} if df["rep"].nunique() > 1 else HEADERS
    files = st.write_outputs(df, sweep_dir, headers, notes)
    files.append(plot(df, sweep_dir / "sweep.png", cpu_ms, cpus))
    return files


def plot(df: pd.DataFrame, path: Path, cpu_ms: float, cpus: int) -> Path:
    """All answered after (bars) and slowest job (ticks) per worker count, one panel per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = df.groupby(["uploads", "workers"], as_index=False, sort=False).agg(
        workers_label=("workers_label", "first"),
        all_s=("all_s", "median"),
        slowest_s=("slowest_s", "median"),
    )
    levels = list(dict.fromkeys(df["uploads"]))
    fig, axes = plt.subplots(1, len(levels), figsize=(4.5 * len(levels), 4), squeeze=False)
    for ax, n in zip(axes[0], levels, strict=True):
        g = df[df["uploads"] == n]
        labels = list(g["workers_label"])
        colors = ["#d83" if w == 0 else "#37a" for w in g["workers"]]
        ax.bar(labels, g["all_s"].fillna(0), color=colors, label="all answered after")
        ax.plot(labels, g["slowest_s"], "k_", markersize=20, label="slowest job")
        ax.axhline(n * cpu_ms / 1000 / cpus, color="grey", ls=":", label=f"CPU floor ({cpus} CPUs)")
        ax.set_title(f"{n} concurrent uploads")
        ax.set_xlabel("rq workers")
        ax.set_ylabel("seconds")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"S004: inline vs job queue ({cpu_ms:g} ms CPU per upload)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
