"""Seed S003 as a sweep: TCP server models × concurrency, the same churn load in every cell.

Each cell starts ``python -m servers tcp --model M`` (the locustfile's declared ``tcp`` server,
its ``--model`` overridden), runs ``U`` users that each make ``--connections-per-user``
short-lived connections doing ``--round-trips`` echo round trips (rows ``connect``, ``msg``,
``session``), and stops as soon as every connection is accounted for — or at the cell's time
limit, which the table then reports as ``capped`` with how many connections got done.

The table and plot are drawn by :mod:`analysis.sweeps.tcp`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from echoswarm.orchestrate.scenario import ServerSpec
from echoswarm.sweep.done import all_connections
from echoswarm.sweep.engine import (
    Cell,
    Plan,
    SweepParser,
    UsageError,
    add_common_flags,
    choice_list,
    count,
    repeat,
    user_levels,
)


@dataclass(frozen=True)
class Defaults:
    """A grid's defaults (each overridden by its flag)."""

    users: tuple[int, ...]
    connections: int
    round_trips: int
    cell_time: float


# Full: 10 models × 3 levels in 4–5 minutes on this 2-core machine (well under the ~15 asked),
# with the seed's 50 round trips per connection; the seed's own 100 connections per user are a
# flag away, each cell then capped by --cell-time. Quick: one level, about a minute.
FULL = Defaults(users=(50, 150, 1000), connections=3, round_trips=50, cell_time=60.0)
QUICK = Defaults(users=(200,), connections=3, round_trips=10, cell_time=20.0)
DEFAULT_WORKERS = 2
MODELS = (
    "asyncio",
    "simple",
    "select",
    "epoll",
    "fork",
    "thread",
    "prefork",
    "prethread",
    "select_prethread",
    "uvloop",
)
"""``python -m servers tcp --model`` choices (a test holds this to ``servers.tcp.MODELS``;
echoswarm does not import the servers)."""


def _tcp_server(servers: list[ServerSpec]) -> ServerSpec:
    tcp = [s for s in servers if s.kind == "tcp"]
    if len(tcp) != 1:
        raise UsageError("a TCP model sweep needs exactly one declared tcp server")
    return tcp[0]


def make_plan(argv: list[str], servers: list[ServerSpec]) -> Plan:
    p = SweepParser(prog="python -m echoswarm sweep", description=__doc__.splitlines()[0])
    add_common_flags(p)
    p.add_argument("--models", default="all", help=f"all or a list of: {', '.join(MODELS)}")
    p.add_argument(
        "--users", type=user_levels, default=None, help="concurrency levels: 50,150,1000"
    )
    p.add_argument("--connections-per-user", type=count, default=None)
    p.add_argument("--round-trips", type=count, default=None)
    p.add_argument("--repeat", type=repeat, default=1, help="run the whole grid N times (noise)")
    ns = p.parse_args(argv)
    base = QUICK if ns.quick else FULL
    models = choice_list(ns.models, MODELS, "model")
    users: list[int] = ns.users or list(base.users)
    conns: int = ns.connections_per_user or base.connections
    rts: int = ns.round_trips or base.round_trips
    limit: float = ns.cell_time or base.cell_time
    server = _tcp_server(servers)
    cells = []
    # Repeats run the whole grid again (not a cell N times in a row), so slow drifts of the
    # machine spread over every model instead of favouring one.
    for rep in range(1, ns.repeat + 1):
        for u in users:
            for model in models:
                cells.append(
                    _cell(model, u, rep if ns.repeat > 1 else 0, conns, rts, limit, ns, server)
                )
    return Plan(
        title=f"S003 TCP models: {len(models)} models × users {','.join(map(str, users))}, "
        f"{conns} connections/user × {rts} round trips"
        + (f", {ns.repeat} repeats" if ns.repeat > 1 else ""),
        locustfile=ns.locustfile,
        workers=ns.workers or DEFAULT_WORKERS,
        cells=cells,
        out=ns.out,
        describe={
            "grid": "tcp",
            "models": models,
            "users": users,
            "connections_per_user": conns,
            "round_trips": rts,
            "cell_time_s": limit,
            "repeat": ns.repeat,
            "quick": ns.quick,
        },
    )


def _cell(
    model: str,
    u: int,
    rep: int,
    conns: int,
    rts: int,
    limit: float,
    ns: argparse.Namespace,
    server: ServerSpec,
) -> Cell:
    """One model at one concurrency (``rep`` > 0: one of several repeats)."""
    return Cell(
        label=f"{model}-u{u}" + (f"-r{rep}" if rep else ""),
        key={"model": model, "users": u, **({"rep": rep} if rep else {})},
        users=u,
        spawn_rate=ns.spawn_rate or float(u),  # everyone within ~1 s
        time_limit_s=limit,
        locust_args=[
            # A server that makes clients queue (simple, prefork at high concurrency) is
            # measured waiting, not cut off at the users' default 5 s.
            "--reply-timeout-s",
            "30",
            "--connections-per-user",
            str(conns),
            "--round-trips",
            str(rts),
            # Per-connection sums need every round trip as an event.
            "--events-max-per-s",
            "1000000",
        ],
        server_overrides={server.label: ["--model", model]},
        done=all_connections(u * conns),
    )
