"""Time between the master and its workers: how long a worker waits for a silent master, and
(see :class:`MasterClock`) each worker's clock offset to the master.

Registered by :mod:`echoswarm.plugins.collector` (importing this module adds its Locust options
and one ``init`` listener).

**Master timeout** — a stock Locust worker quits 60 s after its master's heartbeats stop
(``MASTER_HEARTBEAT_TIMEOUT``). ``--master-timeout-s S`` shortens (or lengthens) that in the
worker that is given it (the orchestrator's ``--master-timeout-s`` passes it to every worker);
without it Locust's default stands.
"""

from __future__ import annotations

from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

from echoswarm import argtypes
from echoswarm.plugins import compat

MASTER_TIMEOUT_RANGE = (1.0, 3600.0)
master_timeout = argtypes.float_between(*MASTER_TIMEOUT_RANGE, " s")


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    parser.add_argument(
        "--master-timeout-s",
        type=master_timeout,
        default=None,
        include_in_web_ui=False,
        help="a worker quits this long after its master's heartbeats stop (Locust's default: 60 s)",
    )


@events.init.add_listener
def _on_init(environment: Environment, **_kw: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        seconds = getattr(environment.parsed_options, "master_timeout_s", None)
        if seconds is not None:
            compat.set_master_heartbeat_timeout(float(seconds))
