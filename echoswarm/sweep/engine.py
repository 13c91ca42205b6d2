"""The sweep engine: run a :class:`Plan`'s cells one after another, each a complete local run.

Every cell is a complete local run (:class:`echoswarm.orchestrate.run.LocalRun`): its own
servers, Locust master and workers, its own results directory ``<sweep-dir>/<cell>/``; nothing
is shared between cells, so each starts from the same state and gets the same load. A cell ends
when its load is done — its users stop when their work is done and
:mod:`echoswarm.plugins.autostop` ends the test; for a scenario without that plugin, the cell's
completion test on the live ``summary.csv`` stops the master the way Ctrl-C would, so the last
reports are still collected — or when its time limit runs out, which the table then says
(``capped``). Whether a cell finished is judged on its final results. Afterwards the sweep
writes ``sweep.json`` into the sweep directory and ``python -m analysis sweep`` draws
``sweep.csv``, ``sweep.md`` and ``sweep.png`` from it and prints the table.

Which grid is run follows from the one server the locustfile declares:

* ``tcp`` → seed S003, TCP server models × concurrency (:mod:`echoswarm.sweep.tcp`)::

      python -m echoswarm sweep locustfiles/tcp_churn.py --models all --users 50,150,1000 \\
          --connections-per-user 3 --round-trips 50

* ``ws --work stats`` → seed S001, serial vs parallel images × reply after/before
  (:mod:`echoswarm.sweep.images`)::

      python -m echoswarm sweep locustfiles/image_frames.py --images 1000

* ``jobs`` → seed S004, concurrent uploads × rq workers (0 = inline) (:mod:`echoswarm.sweep.jobs`)::

      python -m echoswarm sweep locustfiles/job_queue.py --queue-workers 0,3,10 --uploads 5,10

Exit codes: 0 ok (capped cells included: they are reported, not errors) · 2 usage error ·
3 a cell failed to run · 4 a cell completed degraded (a worker lost and replaced; that cell is
``partial``) · 130/143 interrupted (the table covers the cells done so far).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO

from echoswarm import argtypes
from echoswarm.measure import Timer
from echoswarm.orchestrate.run import EXIT_DEGRADED, EXIT_OK, EXIT_RUN, LocalRun, RunConfig

POLL_S = 0.5  # how often a running cell's summary.csv is checked for completion
# After the load is seen done, how long the master may take to end by itself (autostop, then
# the results plugin's bounded wait for the workers' final reports) before it is told to.
GRACE_S = 12.0


class UsageError(Exception):
    """A bad sweep argument (one line, exit 2)."""


class SweepParser(argparse.ArgumentParser):
    """argparse whose errors are ONE line (raised as :class:`UsageError`, exit 2 upstream)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def choice_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    """``"all"`` or a comma list of ``allowed`` names (order kept, duplicates dropped)."""
    if text.strip() == "all":
        return list(allowed)
    out: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if name not in allowed:
            raise UsageError(f"unknown {what} {name!r} (choose from all, {', '.join(allowed)})")
        if name not in out:
            out.append(name)
    return out


# Bounds of the grids' own flags (the load flags' are echoswarm.argtypes'): far beyond a sane
# sweep, small enough that a typo is refused before anything starts.
MAX_REPEAT = 100
MAX_COUNT = 1_000_000  # connections per user, round trips, images
repeat = argtypes.int_between(1, MAX_REPEAT)
count = argtypes.int_between(1, MAX_COUNT)
user_levels = argtypes.int_list_between(1, argtypes.MAX_USERS)


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """Flags every grid takes (its own defaults are set by the plan)."""
    p.add_argument("locustfile", type=Path, help="the scenario, e.g. locustfiles/tcp_churn.py")
    p.add_argument(
        "--workers", type=argtypes.local_workers, default=None, help="Locust worker processes"
    )
    p.add_argument("--spawn-rate", type=argtypes.spawn_rate, default=None, help="users started/s")
    p.add_argument(
        "--cell-time",
        type=argtypes.positive_float_upto(argtypes.MAX_RUN_SECONDS, " s"),
        default=None,
        help="time limit of one cell (s)",
    )
    p.add_argument("--out", type=Path, default=None, help="sweep directory to write")
    p.add_argument("--quick", action="store_true", help="a small, ~2-minute version")


# -- cells -------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One run of the grid."""

    label: str  # directory name, e.g. "epoll-u150"
    key: dict[str, Any]  # the grid coordinates, e.g. {"model": "epoll", "users": 150}
    users: int
    spawn_rate: float
    time_limit_s: float
    locust_args: list[str] = field(default_factory=list)
    server_overrides: dict[str, list[str]] = field(default_factory=dict)
    done: Callable[[list[dict[str, Any]]], bool] | None = None  # on summary.csv rows


@dataclass
class Outcome:
    """What happened to a cell."""

    cell: Cell
    results: Path
    exit_code: int
    wall_s: float
    finished: bool  # the completion test passed (False: time limit, error or interrupted)
    # run.json's: complete, partial (a worker's data lost), interrupted (stopped early: by the
    # cell watch once its load is done, or cut short), failed
    run_status: str = ""

    @property
    def status(self) -> str:
        if self.exit_code == EXIT_RUN:
            return "failed"
        if self.exit_code == EXIT_DEGRADED:
            return "partial"  # a worker was lost (and replaced): the gap is in its run.json
        if self.exit_code != EXIT_OK:
            return "interrupted"
        if self.finished:
            return "done"
        if self.run_status not in ("complete", "partial", "interrupted"):
            return "failed"  # the test never ran (e.g. the locustfile failed to import)
        return "partial" if self.run_status == "partial" else "capped"


@dataclass
class Plan:
    """A grid: the cells and how to run them (``describe`` goes into ``sweep.json``, where the
    tables find the grid's parameters)."""

    title: str
    locustfile: Path
    workers: int
    cells: list[Cell]
    out: Path | None = None  # the sweep directory (None: results/sweep-<stamp>-<scenario>)
    describe: dict[str, Any] = field(default_factory=dict)


def rows_by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """summary.csv rows keyed by name (a sweep's scenario uses one transport)."""
    return {str(r["name"]): r for r in rows}


class _CellWatch(threading.Thread):
    """Ends a cell whose load is done but whose master keeps running (a scenario without
    :mod:`echoswarm.plugins.autostop`): SIGINT, Locust's graceful stop, so the last reports are
    still collected."""

    def __init__(self, run: LocalRun, results: Path, done: Callable[..., bool]) -> None:
        super().__init__(name="sweep-cell-watch", daemon=True)
        self.local_run = run
        self.results = results
        self.done = done
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(POLL_S):
            if _cell_done(self.results, self.done):
                break
        else:
            return
        # The scenario may be ending by itself right now (autostop): a second SIGINT would kill
        # the master mid-finalization, so give it a moment first.
        if self.halt.wait(GRACE_S):
            return
        for child in list(self.local_run.sup.children):
            if child.role == "master":
                child.signal(signal.SIGINT)


def _cell_done(results: Path, done: Callable[..., bool]) -> bool:
    from echoswarm.results import ResultsError, read_summary

    try:
        return bool(done(read_summary(results)))
    except ResultsError:
        return False  # not written yet


def run_cell(plan: Plan, cell: Cell, sweep_dir: Path, extra: list[str]) -> Outcome:
    results = sweep_dir / cell.label
    results.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig(
        locustfile=plan.locustfile,
        workers=plan.workers,
        users=cell.users,
        spawn_rate=cell.spawn_rate,
        run_time=f"{int(round(cell.time_limit_s))}s",
        run_seconds=float(int(round(cell.time_limit_s))),
        results=results,
        locust_args=[*cell.locust_args, *extra],
        report=False,
        argv=["sweep", str(plan.locustfile), cell.label],
        server_overrides=cell.server_overrides,
    )
    timer = Timer()
    with (results / "orchestrator.log").open("w") as log:
        local = LocalRun(cfg, out=log)
        watch = _CellWatch(local, results, cell.done) if cell.done else None
        if watch:
            watch.start()
        try:
            # The orchestrator's warnings belong to the cell's log, not between table lines.
            with contextlib.redirect_stderr(log):
                code = local.execute()
        finally:
            if watch:
                watch.halt.set()
                watch.join(timeout=5)
    # Judged on the final results: all the load done, or cut short by the time limit.
    finished = code == EXIT_OK and (cell.done is None or _cell_done(results, cell.done))
    return Outcome(cell, results, code, timer.elapsed_ns() / 1e9, finished, _run_status(results))


def _failure(results: Path) -> str:
    """One line on why a cell failed: the first child that exited with an error, if known."""
    try:
        exited = json.loads((results / "run.json").read_text())["orchestrator"]["children_exited"]
    except (OSError, ValueError, KeyError, TypeError):
        exited = []
    for child in exited:
        if child.get("exit_code"):
            return f"{child['child']} exited with code {child['exit_code']}: {child['last_output']}"
    return "no results were written"


def _run_status(results: Path) -> str:
    from echoswarm.results import ResultsError, read_run

    try:
        return str(read_run(results).get("status", ""))
    except ResultsError:
        return ""


def execute(plan: Plan, sweep_dir: Path, extra: list[str], out: TextIO = sys.stdout) -> int:
    """Run every cell in order, then write and print the table. Returns the exit code."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    say = _printer(out)
    say(f"{plan.title}: {len(plan.cells)} cells, {plan.workers} worker(s) each → {sweep_dir}")
    outcomes: list[Outcome] = []
    code = EXIT_OK
    for i, cell in enumerate(plan.cells, 1):
        coords = " ".join(f"{k}={v}" for k, v in cell.key.items())
        say(f"[{i}/{len(plan.cells)}] {coords} …", end="")
        outcome = run_cell(plan, cell, sweep_dir, extra)
        outcomes.append(outcome)
        say(f" {outcome.status} in {outcome.wall_s:.1f}s")
        if outcome.status == "failed":
            say(f"    {_failure(outcome.results)}")
            say(f"    see {outcome.results}/orchestrator.log and {outcome.results}/logs/")
            code = EXIT_RUN
        elif outcome.status == "interrupted":
            code = outcome.exit_code
            break
        elif outcome.exit_code == EXIT_DEGRADED and code == EXIT_OK:
            code = EXIT_DEGRADED
    _write_json(plan, outcomes, sweep_dir)
    if outcomes:
        say("")
        tables = subprocess.run(
            [sys.executable, "-m", "analysis", "sweep", str(sweep_dir)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        out.write(tables.stdout)
        if tables.returncode != 0:
            why = (tables.stderr.strip().splitlines() or ["no output"])[-1]
            say(f"the sweep's tables failed: {why}")
            code = code or EXIT_RUN
    return code


def _write_json(plan: Plan, outcomes: list[Outcome], sweep_dir: Path) -> None:
    data = {
        "title": plan.title,
        "locustfile": str(plan.locustfile),
        "workers": plan.workers,
        "plan": plan.describe,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cells": [
            {
                "label": o.cell.label,
                **o.cell.key,
                "users": o.cell.users,
                "status": o.status,
                "exit_code": o.exit_code,
                "wall_s": round(o.wall_s, 3),
                "time_limit_s": o.cell.time_limit_s,
                "results": str(o.results),
                "locust_args": o.cell.locust_args,
                "server_overrides": o.cell.server_overrides,
            }
            for o in outcomes
        ],
    }
    (sweep_dir / "sweep.json").write_text(json.dumps(data, indent=2))


def _printer(out: TextIO) -> Callable[..., None]:
    def say(text: str, end: str = "\n") -> None:
        out.write(text + end)
        out.flush()

    return say


def default_sweep_dir(locustfile: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path("results") / f"sweep-{stamp}-{locustfile.stem}"
