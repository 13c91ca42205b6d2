"""Seed S001 as a sweep: serial vs parallel images × the server's reply after/before the work.

Four cells, each a separate local run so the two kinds never compete for the CPU: for each
``--reply`` mode of the declared ``ws --work stats`` server, one ``serial`` cell (one user, one
connection, ``--images`` images back to back) and one ``parallel`` cell (``--parallel`` users,
a fresh connection per image, ``--images`` in total). The table gives the total time for the N
images (first connect → last reply), images per second, per-image latency percentiles (serial:
send → reply on the open connection; parallel: connect → closed, the whole life of an image's
connection) and send → reply alone (:mod:`analysis.sweeps.images` draws them).
"""

from __future__ import annotations

from echoswarm import argtypes
from echoswarm.orchestrate.scenario import ServerSpec
from echoswarm.streams.images import per_user
from echoswarm.sweep.done import all_connections, all_messages
from echoswarm.sweep.engine import (
    Cell,
    Plan,
    SweepParser,
    UsageError,
    add_common_flags,
    choice_list,
    count,
    repeat,
)

FULL = {"images": 1000, "parallel": 50, "cell_time": 120.0}
QUICK = {"images": 200, "parallel": 20, "cell_time": 40.0}
DEFAULT_WORKERS = 1  # the same client capacity for both kinds
REPLIES = ("after", "before")
KINDS = ("serial", "parallel")


def _stats_server(servers: list[ServerSpec]) -> ServerSpec:
    ws = [s for s in servers if s.kind == "ws" and "stats" in s.args]
    if len(ws) != 1:
        raise UsageError("an image sweep needs exactly one declared ws server with --work stats")
    return ws[0]


def make_plan(argv: list[str], servers: list[ServerSpec]) -> Plan:
    p = SweepParser(prog="python -m echoswarm sweep", description=__doc__.splitlines()[0])
    add_common_flags(p)
    p.add_argument("--images", type=count, default=None, help="images per cell (1000)")
    p.add_argument("--parallel", type=argtypes.users, default=None, help="parallel users (50)")
    p.add_argument("--replies", default="all", help="all or a list of: after, before")
    p.add_argument("--kinds", default="all", help="all or a list of: serial, parallel")
    p.add_argument("--repeat", type=repeat, default=1, help="run the whole grid N times (noise)")
    ns = p.parse_args(argv)
    base = QUICK if ns.quick else FULL
    images = ns.images or int(base["images"])
    parallel = ns.parallel or int(base["parallel"])
    limit = ns.cell_time or float(base["cell_time"])
    replies = choice_list(ns.replies, REPLIES, "reply mode")
    kinds = choice_list(ns.kinds, KINDS, "kind")
    server = _stats_server(servers)
    common = ["--images", str(images), "--parallel", str(parallel), "--reply-timeout-s", "30"]
    cells = []
    for rep in range(1, ns.repeat + 1):  # whole grid again: drifts spread over every cell
        for reply in replies:
            for kind in kinds:
                users = 1 if kind == "serial" else parallel
                prefix = kind + " "
                done = (
                    all_messages(images, prefix)
                    if kind == "serial"
                    else all_connections(parallel * per_user(images, parallel), prefix)
                )
                tag = {"rep": rep} if ns.repeat > 1 else {}
                cells.append(
                    Cell(
                        label=f"{kind}-{reply}" + (f"-r{rep}" if tag else ""),
                        key={"reply": reply, "kind": kind, **tag},
                        users=users,
                        spawn_rate=ns.spawn_rate or float(users),
                        time_limit_s=limit,
                        locust_args=["--image-kind", kind, *common],
                        server_overrides={server.label: ["--reply", reply]},
                        done=done,
                    )
                )
    return Plan(
        title=f"S001 images: {images} × 800×600 per cell, serial vs {parallel} parallel, "
        f"reply {'/'.join(replies)}" + (f", {ns.repeat} repeats" if ns.repeat > 1 else ""),
        locustfile=ns.locustfile,
        workers=ns.workers or DEFAULT_WORKERS,
        cells=cells,
        out=ns.out,
        describe={
            "grid": "images",
            "images": images,
            "parallel": parallel,
            "replies": replies,
            "kinds": kinds,
            "cell_time_s": limit,
            "repeat": ns.repeat,
            "quick": ns.quick,
        },
    )
