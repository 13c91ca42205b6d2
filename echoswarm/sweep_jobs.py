"""Seed S004 as a sweep: N concurrent uploads of CPU-bound work, inline vs W rq workers.

Each cell starts ``python -m servers jobs`` (the locustfile's declared server) with
``--queue-workers W`` (0 = inline only: no Redis, no workers) and ``--job-cpu-ms``, then spawns
U users at once, each making ONE upload and waiting for its answer (``--uploads-per-user 1``):
``POST /stt/native`` when W is 0, ``POST /stt/task`` + polling otherwise. The cell ends when
every upload is answered (or failed), or at its time limit.

Table columns (per uploads × workers): uploads answered; *all answered after* — first upload
sent → last answer received (the seed's "≈ 50 s until all answered"); *first* and *slowest
job* — the shortest and longest upload → answer time (the seed's "first ≈ 20 s", "slowest job
25.4 s"); per-job p50/p99 (rows ``native`` / ``job``, from merged HDR histograms); for the
queue, rq's own queue wait and run time p50. All in seconds. The notes compare each worker
count with inline at the same number of uploads, and say what the machine's cores allow: a
CPU-bound batch cannot finish sooner than its total CPU time divided by the cores.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from echoswarm import sweep_table as st
from echoswarm.argtypes import (
    non_negative_float,
    non_negative_int,
    positive_int,
    positive_int_list,
)
from echoswarm.scenario import ServerSpec
from echoswarm.sweep import Cell, Outcome, Plan, SweepParser, UsageError, add_common_flags


@dataclass(frozen=True)
class Defaults:
    """A grid's defaults (each overridden by its flag)."""

    workers: tuple[int, ...]
    uploads: tuple[int, ...]
    job_cpu_ms: float


# Full: the seed's grid (inline, 3 and 10 workers; 5 and 10 uploads) with 2 s jobs: 6 cells,
# 3-4 minutes here. Quick: inline vs 2 workers, 4 uploads of 0.2 s, about a minute.
FULL = Defaults(workers=(0, 3, 10), uploads=(5, 10), job_cpu_ms=2000.0)
QUICK = Defaults(workers=(0, 2), uploads=(4,), job_cpu_ms=200.0)
DEFAULT_WORKERS = 1  # Locust workers: the users only wait (one process is plenty)

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


def non_negative_int_list(text: str) -> list[int]:
    """``"0,3,10"`` → ``[0, 3, 10]`` (order kept, duplicates dropped)."""
    out: list[int] = []
    for part in text.split(","):
        try:
            value = non_negative_int(part.strip())
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (in {text!r})") from None
        if value not in out:
            out.append(value)
    return out


def _jobs_server(servers: list[ServerSpec]) -> ServerSpec:
    jobs = [s for s in servers if s.kind == "jobs"]
    if len(jobs) != 1:
        raise UsageError("a job-queue sweep needs exactly one declared jobs server")
    return jobs[0]


def _row_name(workers: int) -> str:
    """The row that holds one upload's whole wait: the inline request, or the queued job."""
    return "native" if workers == 0 else "job"


def cell_time(uploads: int, cpu_ms: float) -> float:
    """Time limit: the whole batch on one core, three times over, plus start-up."""
    return max(60.0, 3.0 * uploads * cpu_ms / 1000.0 + 45.0)


def make_plan(argv: list[str], servers: list[ServerSpec]) -> Plan:
    p = SweepParser(prog="python -m echoswarm sweep", description=__doc__.splitlines()[0])
    add_common_flags(p)
    p.add_argument(
        "--queue-workers",
        type=non_negative_int_list,
        default=None,
        help="rq worker counts, 0 = inline (0,3,10)",
    )
    p.add_argument(
        "--uploads", type=positive_int_list, default=None, help="concurrent uploads (5,10)"
    )
    p.add_argument("--job-cpu-ms", type=non_negative_float, default=None, help="CPU per job (2000)")
    p.add_argument(
        "--repeat", type=positive_int, default=1, help="run the whole grid N times (noise)"
    )
    ns = p.parse_args(argv)
    base = QUICK if ns.quick else FULL
    workers: list[int] = ns.queue_workers or list(base.workers)
    uploads: list[int] = ns.uploads or list(base.uploads)
    cpu_ms = base.job_cpu_ms if ns.job_cpu_ms is None else float(ns.job_cpu_ms)
    server = _jobs_server(servers)
    cells = []
    grid = [(rep, n, w) for rep in range(1, ns.repeat + 1) for n in uploads for w in workers]
    for rep, n, w in grid:  # the whole grid again per repeat: drifts spread over every cell
        limit = ns.cell_time or cell_time(n, cpu_ms)
        tag = {"rep": rep} if ns.repeat > 1 else {}
        cells.append(
            Cell(
                label=f"u{n}-w{w}" + (f"-r{rep}" if tag else ""),
                key={"uploads": n, "workers": w, **tag},
                users=n,
                spawn_rate=ns.spawn_rate or float(n),
                time_limit_s=limit,
                locust_args=[
                    "--upload-mode",
                    "inline" if w == 0 else "queued",
                    "--uploads-per-user",
                    "1",
                    "--job-deadline-s",
                    f"{limit:g}",
                ],
                server_overrides={
                    server.label: ["--queue-workers", str(w), "--job-cpu-ms", f"{cpu_ms:g}"]
                },
                done=_all_answered(n, w),
            )
        )
    return Plan(
        title=f"S004 job queue: {'/'.join(map(str, uploads))} concurrent uploads of "
        f"{cpu_ms:g} ms CPU each, workers {'/'.join(map(str, workers))} (0 = inline)"
        + (f", {ns.repeat} repeats" if ns.repeat > 1 else ""),
        locustfile=ns.locustfile,
        workers=ns.workers or DEFAULT_WORKERS,
        cells=cells,
        table=table,
        render=lambda df, out: render(df, out, cpu_ms),
        out=ns.out,
        describe={
            "grid": "jobs",
            "queue_workers": workers,
            "uploads": uploads,
            "job_cpu_ms": cpu_ms,
            "cpus": os.cpu_count(),
            "repeat": ns.repeat,
            "quick": ns.quick,
        },
    )


def _all_answered(uploads: int, workers: int) -> Callable[[list[dict[str, Any]]], bool]:
    name = _row_name(workers)

    def done(rows: list[dict[str, Any]]) -> bool:
        by = {str(r["name"]): r for r in rows}
        return st.count(by.get(name)) >= uploads

    return done


def _s(value: float) -> float:
    return value / 1000.0 if not math.isnan(value) else math.nan


def table(outcomes: list[Outcome]) -> pd.DataFrame:
    records = []
    for o in outcomes:
        n, w = int(o.cell.key["uploads"]), int(o.cell.key["workers"])
        rows = st.summary_rows(o.results)
        name = _row_name(w)
        row = rows.get(name)
        ok = st.count(row) - st.count(row, "failures")
        ev = st.events(o.results)
        records.append(
            {
                "uploads": n,
                "workers": w,
                "rep": int(o.cell.key.get("rep", 1)),
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


def render(df: pd.DataFrame, sweep_dir: Path, cpu_ms: float) -> list[Path]:
    cpus = os.cpu_count() or 1
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
