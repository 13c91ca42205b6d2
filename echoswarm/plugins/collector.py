"""The results plugin for Locust: HDR histograms and per-event records, merged on the master.

Importing this module (``echoswarm.users`` does) registers its options and one ``init``
listener; in each Locust process that listener attaches the sides its runner needs, the way
Locust's own ``setup_distributed_stats_event_listeners`` does for its stats:

* **worker** — :class:`~echoswarm.plugins.recording.Recording`: records every ``request``
  event and ships a report with each of Locust's worker reports;
* **master** — :class:`~echoswarm.plugins.writing.Writing`: merges the reports, writes the
  results directory, waits for the final reports at quit;
* **local** (one process) — both, without the wire.

The workers never touch the results directory. Nothing here prints; problems go to the
``echoswarm.plugins`` logger.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from echoswarm import argtypes
from echoswarm.measure import Sample
from echoswarm.plugins import (
    clock,  # noqa: F401  (its options and worker hooks register)
    compat,
)
from echoswarm.plugins.recording import DEFAULT_MAX_EVENTS_PER_S, Recording
from echoswarm.plugins.writing import Writing

_writers: weakref.WeakKeyDictionary[Environment, Writing] = weakref.WeakKeyDictionary()
_recordings: weakref.WeakKeyDictionary[Environment, Recording] = weakref.WeakKeyDictionary()


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    parser.add_argument(
        "--results-dir",
        default=None,
        include_in_web_ui=False,
        help="echoswarm results directory (default results/<UTC stamp>-<locustfile stem>); "
        "written by the master or the local runner only",
    )
    parser.add_argument(
        "--events-sample-rate",
        type=argtypes.unit_fraction,
        default=1.0,
        help="fraction of samples kept as rows of events.parquet (1.0 = every sample)",
    )
    parser.add_argument(
        "--events-max-per-s",
        type=argtypes.positive_int,
        default=DEFAULT_MAX_EVENTS_PER_S,
        help="per worker process: above this many events/s the kept fraction is halved (recorded)",
    )
    parser.add_argument(
        "--results-drain-s",
        type=argtypes.up_to_an_hour,
        default=10.0,
        include_in_web_ui=False,
        help="how long the master waits at quit for the workers' final reports",
    )


@events.init.add_listener
def _on_init(environment: Environment, **_kw: Any) -> None:
    runner = environment.runner
    if runner is None:
        return
    compat.cheap_stop_logging()  # Runner.stop would hold the loop 40-50 ms to log its caller
    if compat.started_by_locust_main():
        compat.ctrl_c_reaches_main()  # stock Locust can drop a SIGINT (compat explains)
    if isinstance(runner, WorkerRunner):
        _recordings[environment] = Recording(environment, worker=True)
    elif isinstance(runner, MasterRunner):
        compat.rebalance_after_every_dispatch(environment)  # a healed worker's users move back
        _writers[environment] = Writing(environment, None)
    else:
        local = _recordings[environment] = Recording(environment, worker=False)
        _writers[environment] = Writing(environment, local)


def recorder_of(environment: Environment) -> Callable[[Sample], None] | None:
    """Where this process records a sample directly (None where no users run: the master)."""
    r = _recordings.get(environment)
    return None if r is None else r.record


def before_report(environment: Environment, hook: Callable[[], None]) -> None:
    """Call ``hook`` before every report is made (batched samples are handed over then)."""
    r = _recordings.get(environment)
    if r is not None:
        r.before_harvest.append(hook)


def snapshot(environment: Environment) -> dict[str, Any]:
    """Live progress (JSON-able) on the master or a local runner; ``{}`` elsewhere."""
    w = _writers.get(environment)
    return w.snapshot() if w is not None else {}


def finalize(environment: Environment) -> None:
    """Write the final results now (Locust's ``quit`` event does this for command-line runs)."""
    w = _writers.get(environment)
    if w is not None:
        w.finalize()


def run_dir(environment: Environment) -> Path | None:
    """The results directory of this (master/local) process, once the test has started."""
    w = _writers.get(environment)
    return w.writer.dir if w is not None and w.writer is not None else None
