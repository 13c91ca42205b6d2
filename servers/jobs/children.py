"""The jobs server's child processes: its own ``redis-server`` and N rq workers — started,
watched, restarted, and always stopped.

Every child is started through ``python -m echoswarm.pdeath`` (the kernel SIGTERMs it when the
server dies, even by SIGKILL; rq workers turn that into SIGKILL for themselves and everything
they fork, see :mod:`servers.jobs.worker`). Their output goes to the server's stderr, never to
its stdout (whose first line is the LISTENING line).

While the server runs, :meth:`Fleet.check` (called every :data:`CHECK_S` from the server's
loop, in a thread: it talks to Redis) notices a child that died: a worker's running job is
failed with the reason (rq would leave it "started" forever) and the worker is replaced; our own
Redis is restarted on the same socket (its jobs are lost with it: their polls answer 404).
Restarts back off when a child keeps dying right after it starts.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from servers.jobs.queue import (
    QUEUE_NAME,
    connect,
    fail_jobs_of_dead_worker,
    shown_url,
    workers_ready,
)

log = logging.getLogger("servers.jobs")

CHECK_S = 0.25
REDIS_BINARIES = ("redis-server", "redis6-server", "valkey-server")  # Debian, AL2023, forks
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
STABLE_S = 5.0  # a child that lived this long restarts at once when it dies
EXTERNAL_WAIT_S = 10.0
MAINTENANCE_S = 10  # how long start-up waits for a --redis-url that does not answer


class ChildFailed(RuntimeError):
    """A child could not be started or never became ready (one line)."""


def find_redis_server() -> str | None:
    for name in REDIS_BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Child:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    started: float
    restart_at: float = 0.0
    backoff_s: float = BACKOFF_MIN_S

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> int | None:
        return self.popen.poll()


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["ECHOSWARM_PARENT_PID"] = str(os.getpid())
    env["PYTHONUNBUFFERED"] = "1"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "echoswarm.pdeath", *argv],
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr.fileno(),
        stderr=sys.stderr.fileno(),
        env=env,
    )


class Fleet:
    """Our Redis (unless an external URL is given) and the rq workers."""

    def __init__(
        self,
        workdir: Path,
        workers: int,
        *,
        redis_url: str | None = None,
        redis_server: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.n_workers = workers
        self.redis_server = redis_server
        self.own_redis = redis_url is None
        self.socket_path = workdir / "redis.sock"
        self.url = redis_url or f"unix://{self.socket_path}"
        self.redis: Child | None = None
        self.workers: list[Child] = []
        self.generation = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.restarts = 0
        self.jobs_failed: list[str] = []
        self._conn: redis.Redis | None = None

    # -- start ------------------------------------------------------------------------------
    def conn(self) -> redis.Redis:
        if self._conn is None:
            self._conn = connect(self.url)
        return self._conn

    def _redis_argv(self) -> list[str]:
        assert self.redis_server is not None
        return [
            self.redis_server,
            "--port", "0",  # no TCP at all: a private unix socket
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip

    def start_redis(self) -> None:
        if not self.own_redis:
            return
        self.socket_path.unlink(missing_ok=True)
        argv = self._redis_argv()
        self.redis = Child("redis-server", argv, _spawn(argv), time.monotonic())

    def _worker_argv(self, name: str) -> list[str]:
        return [
            sys.executable, "-m", "servers.jobs.worker",
            "--url", self.url,
            "--name", name,
            "--with-scheduler",
            # Also how soon a scheduler that died (Redis went away) is restarted: 600 s default.
            "--maintenance-interval", str(MAINTENANCE_S),
            "--quiet",
            "--disable-job-desc-logging",
            QUEUE_NAME,
        ]  # fmt: skip

    def _start_worker(self, slot: int) -> Child:
        self.generation += 1
        name = f"jobs-{os.getpid()}-w{slot + 1}-{self.generation}"
        argv = self._worker_argv(name)
        return Child(name, argv, _spawn(argv), time.monotonic())

    def start_workers(self) -> None:
        self.workers = [self._start_worker(i) for i in range(self.n_workers)]

    def wait_ready(self, timeout: float, stop: threading.Event) -> None:
        """Until Redis answers and every worker has registered (raises ChildFailed)."""
        deadline = time.monotonic() + timeout
        unreachable_until = time.monotonic() + (timeout if self.own_redis else EXTERNAL_WAIT_S)
        what = "Redis"
        while not stop.is_set():
            for child in [self.redis, *self.workers]:
                if child is not None and (rc := child.exited()) is not None:
                    raise ChildFailed(f"{child.name} {describe_exit(rc)} while starting")
            try:
                self.conn().ping()
                what = "the rq workers"
                if workers_ready(self.conn(), [w.name for w in self.workers]):
                    return
            except redis.RedisError as exc:
                if time.monotonic() > unreachable_until:
                    raise ChildFailed(
                        f"cannot reach Redis at {shown_url(self.url)}: {exc}"
                    ) from None
            if time.monotonic() > deadline:
                raise ChildFailed(f"{what} not ready within {timeout:g}s")
            stop.wait(0.05)  # polling a condition; the deadline bounds it

    # -- watch ------------------------------------------------------------------------------
    def check(self) -> None:
        """Replace dead children (called by the supervisor thread)."""
        with self.lock:
            if self.stopping:
                return
            now = time.monotonic()
            if self.redis is not None and (rc := self.redis.exited()) is not None:
                self.redis = self._restart(self.redis, rc, now, self._restart_redis)
            for slot, worker in enumerate(self.workers):
                rc = worker.exited()
                if rc is None:
                    continue
                if not worker.restart_at:  # first time seen dead: fail its job once
                    self._fail_job(worker, rc)
                self.workers[slot] = self._restart(
                    worker, rc, now, functools.partial(self._start_worker, slot)
                )

    def _restart(self, child: Child, rc: int, now: float, start: Callable[[], Child]) -> Child:
        if not child.restart_at:
            lived = now - child.started
            child.backoff_s = (
                BACKOFF_MIN_S if lived >= STABLE_S else min(child.backoff_s * 2, BACKOFF_MAX_S)
            )
            child.restart_at = now + (0.0 if lived >= STABLE_S else child.backoff_s)
            log.warning(
                "%s (pid %d) %s; restarting%s",
                child.name,
                child.pid,
                describe_exit(rc),
                "" if lived >= STABLE_S else f" in {child.backoff_s:g}s",
            )
        if now < child.restart_at:
            return child
        fresh = start()
        fresh.backoff_s = child.backoff_s
        self.restarts += 1
        return fresh

    def _restart_redis(self) -> Child:
        self.socket_path.unlink(missing_ok=True)
        argv = self._redis_argv()
        return Child("redis-server", argv, _spawn(argv), time.monotonic())

    def _fail_job(self, worker: Child, rc: int) -> None:
        reason = (
            f"rq worker {worker.name} (pid {worker.pid}) died while running this job "
            f"({describe_exit(rc)})"
        )
        try:
            job_id = fail_jobs_of_dead_worker(self.conn(), worker.name, reason)
        except redis.RedisError as exc:
            log.warning("could not fail the job of dead worker %s: %s", worker.name, exc)
            return
        if job_id:
            self.jobs_failed.append(job_id)

    # -- stop -------------------------------------------------------------------------------
    def stop(self, grace_s: float) -> None:
        """SIGTERM the workers (rq: finish the job in hand), then Redis; SIGKILL stragglers."""
        with self.lock:
            self.stopping = True
        _terminate(self.workers, grace_s)
        if self.redis is not None:
            _terminate([self.redis], grace_s)
        if self._conn is not None:
            self._conn.close()


def _terminate(children: list[Child], grace_s: float) -> None:
    for c in children:
        if c.exited() is None:
            c.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for c in children:
        try:
            c.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM for %gs; killing it", c.name, c.pid, grace_s)
            c.popen.kill()
            c.popen.wait()
