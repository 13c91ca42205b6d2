"""``python -m servers tcp``: raw TCP byte echo, with ten server architectures behind --model.

Every model binds the same way (``sockets``), echoes exactly the bytes it gets with the same
buffer bound and shutdown rules (``discipline``, ``reactor``, ``acceptor``, ``children``), and
differs only in how it waits and who runs the echo:

- ``asyncio`` (default): one event loop, a protocol per connection.
- ``uvloop``: the same on uvloop's libuv loop.
- ``simple``: one client at a time, serially; others wait in the backlog.
- ``select`` / ``epoll``: one thread, non-blocking, select(2) or epoll readiness.
- ``thread``: a thread per connection. ``fork``: a process per connection.
- ``prethread``: ``--workers`` threads (default 64) taking turns on accept under a lock.
- ``prefork``: ``--workers`` processes (default 4×CPUs, ≥4) taking turns on accept under a lock.
- ``select_prethread``: select for reads, ``--workers`` threads (default 4×CPUs, ≥4) for sends.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
from collections.abc import Callable
from typing import cast

from echoswarm.orchestrate.commands import TCP_MODELS
from servers.common import (
    MAX_BACKLOG,
    add_common_arguments,
    announce,
    int_between,
    raise_nofile_limit,
)
from servers.tcp import sockets
from servers.tcp.discipline import Config, Stop, default_workers

log = logging.getLogger("servers.tcp")

DEFAULT_PORT = 7777
DEFAULT_BACKLOG = 4096
MAX_WORKERS = 1024
MAX_CONNECTIONS = 1_000_000

MODELS = TCP_MODELS
POOL_MODELS = ("prefork", "prethread", "select_prethread")
CONNECTION_LIMITED = ("select", "epoll", "fork", "thread", "select_prethread", "asyncio", "uvloop")

ServeFn = Callable[..., None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, DEFAULT_PORT)
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="asyncio",
        help="server architecture (default asyncio; see README 'TCP server models')",
    )
    parser.add_argument(
        "--workers",
        type=int_between(1, MAX_WORKERS),
        default=None,
        help=f"pool size, 1..{MAX_WORKERS}, for prefork (default 4×CPUs, min 4), prethread (64) "
        "and select_prethread (4×CPUs, min 4); ignored by the other models",
    )
    parser.add_argument(
        "--backlog",
        type=int_between(1, MAX_BACKLOG),
        default=DEFAULT_BACKLOG,
        help=f"listen backlog, 1..{MAX_BACKLOG} (default {DEFAULT_BACKLOG}; the kernel caps it "
        "at somaxconn)",
    )
    parser.add_argument(
        "--max-connections",
        type=int_between(0, MAX_CONNECTIONS),
        default=0,
        help=f"most connections served at once, 0..{MAX_CONNECTIONS}; the rest wait in the "
        "backlog (0 = model default: select/select_prethread ~1010 (FD_SETSIZE), fork 1024, "
        "thread 4096, others 100000); simple serves 1 and prefork/prethread --workers",
    )


def run(args: argparse.Namespace) -> int:
    model: str = args.model
    if args.workers is not None and model not in POOL_MODELS:
        log.info("--workers does not apply to --model %s; ignored", model)
    if args.max_connections and model not in CONNECTION_LIMITED:
        log.info("--max-connections does not apply to --model %s; ignored", model)
    cfg = Config(
        host=args.host,
        port=args.port,
        backlog=args.backlog,
        delay_s=args.delay_ms / 1000.0,
        workers=args.workers or default_workers(model),
        max_connections=args.max_connections,
    )
    serve = cast(ServeFn, importlib.import_module(f"servers.tcp.{model}_model").serve)
    nofile = raise_nofile_limit()
    stop = Stop()
    stop.install()
    listener = sockets.listen(cfg.host, cfg.port, cfg.backlog)
    pid = os.getpid()
    try:
        log.info("model %s, workers %d, RLIMIT_NOFILE %d", model, cfg.workers, nofile)
        port = sockets.bound_port(listener)
        serve(listener, cfg, stop, lambda: announce("tcp", cfg.host, port))
    finally:
        if os.getpid() == pid:  # children leave through os._exit and never get here
            listener.close()
            stop.close()
    return 0
