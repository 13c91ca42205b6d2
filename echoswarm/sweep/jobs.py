"""Seed S004 as a sweep: N concurrent uploads of CPU-bound work, inline vs W rq workers.

Each cell starts ``python -m servers jobs`` (the locustfile's declared server) with
``--queue-workers W`` (0 = inline only: no Redis, no workers) and ``--job-cpu-ms``, then spawns
U users at once, each making ONE upload and waiting for its answer (``--uploads-per-user 1``):
``POST /stt/native`` when W is 0, ``POST /stt/task`` + polling otherwise. The cell ends when
every upload is answered (or failed), or at its time limit. The table is drawn by
:mod:`analysis.sweeps.jobs`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from echoswarm import argtypes
from echoswarm.orchestrate.scenario import ServerSpec
from echoswarm.sweep.done import count
from echoswarm.sweep.engine import (
    Cell,
    Plan,
    SweepParser,
    UsageError,
    add_common_flags,
    repeat,
    user_levels,
)


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


MAX_QUEUE_WORKERS = 256
MAX_JOB_CPU_MS = 600_000.0  # ten minutes of CPU per job
non_negative_int_list = argtypes.int_list_between(0, MAX_QUEUE_WORKERS)
"""``"0,3,10"`` → ``[0, 3, 10]`` (order kept, duplicates dropped)."""


def _jobs_server(servers: list[ServerSpec]) -> ServerSpec:
    jobs = [s for s in servers if s.kind == "jobs"]
    if len(jobs) != 1:
        raise UsageError("a job-queue sweep needs exactly one declared jobs server")
    return jobs[0]


def row_name(workers: int) -> str:
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
    p.add_argument("--uploads", type=user_levels, default=None, help="concurrent uploads (5,10)")
    p.add_argument(
        "--job-cpu-ms",
        type=argtypes.float_between(0.0, MAX_JOB_CPU_MS, " ms"),
        default=None,
        help="CPU per job (2000)",
    )
    p.add_argument("--repeat", type=repeat, default=1, help="run the whole grid N times (noise)")
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
    name = row_name(workers)

    def done(rows: list[dict[str, Any]]) -> bool:
        by = {str(r["name"]): r for r in rows}
        return count(by.get(name)) >= uploads

    return done
