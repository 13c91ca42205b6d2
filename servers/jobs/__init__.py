"""``python -m servers jobs``: seed S004's HTTP API, its Redis and its rq workers, as one server.

An upload is a 16-bit PCM WAV; the job finds its dominant frequency in pure Python (about
``--job-cpu-ms`` of CPU, see :mod:`servers.jobs.audio`), either inline in the request
(``POST /stt/native``) or through rq on Redis (``POST /stt/task`` then ``GET /stt/task/{id}``),
see :mod:`servers.jobs.app`. Start-up order: bind the port (a port in use is a usage error before
anything starts), calibrate the job, start ``redis-server`` on a private unix socket (unless
``--redis-url``), start ``--queue-workers`` rq workers (:mod:`servers.jobs.worker`) and wait
until each has registered, start uvicorn on the bound socket — and only then print
``LISTENING jobs HOST:PORT``. A supervisor thread replaces children that die
(:mod:`servers.jobs.children`). SIGTERM/SIGINT: uvicorn finishes the requests in flight (up to
``--grace-s``), the workers finish their jobs (same grace), Redis stops; exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from echoswarm.argtypes import positive_float
from servers.common import (
    EXIT_OK,
    EXIT_RUNTIME,
    UsageError,
    add_common_arguments,
    add_grace_argument,
    announce,
    non_negative_float,
    non_negative_int,
    positive_int,
)

if TYPE_CHECKING:  # the web stack and rq load only when the server runs, not for --help
    from starlette.applications import Starlette

    from servers.jobs.children import Fleet

log = logging.getLogger("servers.jobs")

DEFAULT_PORT = 8000
DEFAULT_WORKERS = 3
DEFAULT_JOB_CPU_MS = 2000.0
DEFAULT_MAX_UPLOAD = 8 * 1024 * 1024
READY_TIMEOUT_S = 60.0
BACKLOG = 2048
WORKDIR_PREFIX = "echoswarm-jobs-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, DEFAULT_PORT)
    add_grace_argument(parser, "requests in flight and running jobs")
    parser.add_argument(
        "--queue-workers",
        type=non_negative_int,
        default=DEFAULT_WORKERS,
        help=f"rq worker processes (default {DEFAULT_WORKERS}; 0 = inline only, no Redis)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="use this Redis (redis://HOST:PORT/DB, unix://PATH) instead of starting one",
    )
    parser.add_argument(
        "--job-cpu-ms",
        type=non_negative_float,
        default=DEFAULT_JOB_CPU_MS,
        help=f"CPU time of one job, calibrated at start (default {DEFAULT_JOB_CPU_MS:g})",
    )
    parser.add_argument(
        "--max-upload-bytes",
        type=positive_int,
        default=DEFAULT_MAX_UPLOAD,
        help=f"largest request body accepted; larger → 413 (default {DEFAULT_MAX_UPLOAD})",
    )
    parser.add_argument(
        "--job-timeout-s",
        type=positive_int,
        default=300,
        help="rq job timeout: a job running longer fails (default 300)",
    )
    parser.add_argument(
        "--result-ttl-s",
        type=positive_int,
        default=600,
        help="how long a finished job's result is kept (default 600)",
    )
    parser.add_argument(
        "--failure-ttl-s",
        type=positive_int,
        default=600,
        help="how long a failed job is kept (default 600)",
    )
    parser.add_argument(
        "--upload-dir",
        type=Path,
        default=None,
        help="where uploads are saved for the workers (default: a private temporary directory)",
    )
    parser.add_argument(
        "--cleanup-after-s",
        type=positive_float,
        default=60.0,
        help="the saved upload is deleted by a job scheduled this much later (default 60)",
    )


def _check(args: argparse.Namespace) -> str | None:
    """Usage errors found before anything starts; returns the redis-server binary to use."""
    if args.upload_dir is not None:
        try:
            args.upload_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--upload-dir {args.upload_dir}: {exc.strerror or exc}") from None
    if args.redis_url is not None:
        if args.queue_workers == 0:
            raise UsageError("--redis-url needs --queue-workers of at least 1 (0 = inline only)")
        if not args.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise UsageError(
                f"--redis-url {args.redis_url!r}: expected redis://HOST:PORT[/DB] or unix://PATH"
            )
        return None
    if args.queue_workers == 0:
        return None
    from servers.jobs.children import find_redis_server

    binary = find_redis_server()
    if binary is None:
        raise UsageError(
            "redis-server not found on PATH: install it (Debian: apt-get install redis-server) "
            "or pass --redis-url"
        )
    return binary


def run(args: argparse.Namespace) -> int:
    from servers.tcp.sockets import listen

    redis_server = _check(args)
    sock = listen(args.host, args.port, BACKLOG)
    stop = threading.Event()
    # Until uvicorn serves (it takes the signals over then), a signal ends the start-up.
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    workdir = _workdir()
    fleet: Fleet | None = None
    try:
        from servers.jobs.app import ApiConfig, make_app
        from servers.jobs.audio import calibrate
        from servers.jobs.children import ChildFailed, Fleet
        from servers.jobs.queue import JobQueue, QueueSettings

        passes, per_pass = calibrate(args.job_cpu_ms)
        log.info(
            "a job: %d passes of %.2f ms CPU (--job-cpu-ms %g)", passes, per_pass, args.job_cpu_ms
        )
        queue = None
        if args.queue_workers:
            fleet = Fleet(
                workdir, args.queue_workers, redis_url=args.redis_url, redis_server=redis_server
            )
            fleet.start_redis()
            fleet.start_workers()
            try:
                fleet.wait_ready(READY_TIMEOUT_S, stop)
            except ChildFailed as exc:
                print(f"python -m servers jobs: error: {exc}", file=sys.stderr)
                return EXIT_RUNTIME
            settings = QueueSettings(
                job_timeout_s=args.job_timeout_s,
                result_ttl_s=args.result_ttl_s,
                failure_ttl_s=args.failure_ttl_s,
                cleanup_after_s=args.cleanup_after_s,
            )
            queue = JobQueue(fleet.url, settings)
        if stop.is_set():
            return 0
        cfg = ApiConfig(
            passes=passes,
            max_upload_bytes=args.max_upload_bytes,
            upload_dir=args.upload_dir or workdir / "uploads",
            delay_s=args.delay_ms / 1000.0,
            queue=queue,
        )
        cfg.upload_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(_serve(make_app(cfg), sock, args, stop, fleet))
        if queue is not None:
            queue.close()
        return EXIT_OK
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        with contextlib.suppress(OSError):
            sock.close()
        if fleet is not None:
            fleet.stop(args.grace_s)
        shutil.rmtree(workdir, ignore_errors=True)
        _abandon_inline_work()


def _workdir() -> Path:
    """A private directory for Redis's socket and the uploads, named after this process; those
    left behind by a server that was SIGKILLed (its pid gone) are removed first."""
    for old in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*-*"):
        pid = old.name.removeprefix(WORKDIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True


def _abandon_inline_work() -> None:
    """Exit now if inline jobs cut off by the shutdown are still computing in their threads.

    Python cannot stop a thread, and it would wait for them at exit (the thread pool's threads
    are not daemons): a SIGTERM must not wait for a 10 s job the client has stopped waiting for.
    Everything else is cleaned up by now.
    """
    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if busy and any(t.is_alive() for t in busy):
        log.warning("abandoning %d inline job thread(s) still computing", len(busy))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)


async def _serve(
    app: Starlette,
    sock: socket.socket,
    args: argparse.Namespace,
    stop: threading.Event,
    fleet: Fleet | None,
) -> None:
    import uvicorn

    from servers.jobs.children import CHECK_S

    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=args.grace_s,
        server_header=False,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)  # uvicorn has no "started" event; bounded by its start-up
    if server.started:
        announce("jobs", args.host, int(sock.getsockname()[1]))
    loop = asyncio.get_running_loop()
    while not serving.done():
        if stop.is_set():  # a signal that came during start-up
            server.should_exit = True
        if fleet is not None:
            await loop.run_in_executor(None, fleet.check)  # blocking Redis calls: off the loop
        await asyncio.wait({serving}, timeout=CHECK_S)
    await serving
