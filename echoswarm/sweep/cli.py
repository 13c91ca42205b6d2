"""``python -m echoswarm sweep LOCUSTFILE ...`` — run one scenario once per cell of a grid.

Which grid is run follows from the one server the locustfile declares:

* ``tcp`` → seed S003, TCP server models × concurrency (:mod:`echoswarm.sweep.tcp`)::

      python -m echoswarm sweep locustfiles/tcp_churn.py --models all --users 50,150,1000 \\
          --connections-per-user 3 --round-trips 50

* ``ws --work stats`` → seed S001, serial vs parallel images × reply after/before
  (:mod:`echoswarm.sweep.images`)::

      python -m echoswarm sweep locustfiles/image_frames.py --images 1000

* ``jobs`` → seed S004, concurrent uploads × rq workers, 0 = inline (:mod:`echoswarm.sweep.jobs`)::

      python -m echoswarm sweep locustfiles/job_queue.py --queue-workers 0,3,10 --uploads 5,10

Exit codes: 0 ok (capped cells included: they are reported, not errors) · 2 usage error ·
3 a cell failed to run · 4 a cell completed degraded (a worker lost and replaced) ·
130/143 interrupted (the table covers the cells done so far).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from echoswarm.orchestrate import preflight
from echoswarm.orchestrate.run import EXIT_OK, EXIT_USAGE
from echoswarm.orchestrate.scenario import ScenarioError, ServerSpec, read_servers
from echoswarm.sweep import images, jobs, tcp
from echoswarm.sweep.engine import Plan, UsageError, default_sweep_dir, execute


def _grid_for(servers: list[ServerSpec]) -> str | None:
    # Only scenarios made for a grid: one TCP server (its model varies), or one ws stats server
    # (its reply mode varies). A mixed scenario such as audio_stream has no such axis.
    if len(servers) != 1:
        return None
    (server,) = servers
    if server.kind == "tcp":
        return "tcp"
    if server.kind == "jobs":
        return "jobs"
    if server.kind == "ws" and "stats" in server.args:
        return "images"
    return None


def build_plan(argv: list[str]) -> Plan:
    """Parse the sweep's arguments into a :class:`Plan` (raises UsageError)."""
    # The positional may come after flags with values (``--models all x.py``): prefer a .py.
    positional = [a for a in argv if not a.startswith("-")]
    locustfile = next((Path(a) for a in positional if a.endswith(".py")), None) or next(
        (Path(a) for a in positional), None
    )
    if locustfile is None:
        raise UsageError("no locustfile given (e.g. locustfiles/tcp_churn.py)")
    if not locustfile.is_file():
        raise UsageError(f"locustfile not found: {locustfile}")
    try:
        servers = read_servers(locustfile)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    grid = _grid_for(servers)
    if grid == "tcp":
        return tcp.make_plan(argv, servers)
    if grid == "images":
        return images.make_plan(argv, servers)
    if grid == "jobs":
        return jobs.make_plan(argv, servers)
    raise UsageError(
        f"{locustfile} is not a sweep scenario (it must declare one server: tcp, ws with "
        "--work stats, or jobs)"
    )


def main(argv: list[str]) -> int:
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    if any(a in ("-h", "--help") for a in argv) and not any(not a.startswith("-") for a in argv):
        sys.stdout.write(__doc__ or "")
        return EXIT_OK
    try:
        plan = build_plan(argv)
        # Locust loads the scenario once (users? arguments?) before any cell starts.
        preflight.user_classes(plan.locustfile, extra)
        sweep_dir = plan.out or default_sweep_dir(plan.locustfile)
        preflight.make_results_dir(sweep_dir)
    except (UsageError, preflight.PreflightError) as exc:
        sys.stderr.write(f"python -m echoswarm sweep: error: {exc}\n")
        return EXIT_USAGE
    with contextlib.suppress(BrokenPipeError):
        return execute(plan, sweep_dir, extra)
    return EXIT_OK
