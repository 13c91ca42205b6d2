"""A distributed echoswarm run across namespace hosts, for the fault tests.

    with netns.network(4, tmp_path) as net, Cluster(net, tmp_path / "run") as c:
        c.start_servers("tcp", "ws")                    # h3
        c.start_master(users=20, run_time="28s", transports="tcp,ws")   # h0
        c.start_workers()                               # h1, h2
        c.wait_spawned()
        ...                                             # a fault: net.hosts[i].cut(), a kill
        rc = c.wait_master(60)

Every process binds its own host's address (``10.77.0.N``), never 127.0.0.1, and is started with
the project's own command lines (:mod:`echoswarm.orchestrate.commands`) and the Locust options
``python -m echoswarm run`` gives them (``--enable-rebalancing``, ``--exit-code-on-error 0``,
``--master-timeout-s`` when asked). The workers run in the orchestrator's own
:class:`~echoswarm.orchestrate.workers.WorkerPool` (one per worker host, so a replacement starts
on the same host) under a :class:`~echoswarm.orchestrate.supervise.Supervisor`: a worker that
exits non-zero while the master runs is replaced exactly as in a local run, once
:meth:`Cluster.poll_exits` sees it (every wait here calls it, as the orchestrator's watch loop
does). Servers and the master are started with :meth:`netns.Host.start`/``spawn``.

Times are epoch seconds (``time.time()``): every namespace shares the machine's clock, so they
compare directly with ``events.parquet`` and ``run.json``. :meth:`Cluster.mark` notes a moment
of the experiment (a cut, a restore) for the figures.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from echoswarm.orchestrate import commands
from echoswarm.orchestrate.supervise import Child, Supervisor
from echoswarm.orchestrate.workers import WorkerPool
from tests import netns, procs

LOCUSTFILE = "locustfiles/audio_stream.py"
MASTER_PORT = commands.DEFAULT_MASTER_PORT
SERVER_PORTS = {"grpc": 50051, "ws": 8765, "tcp": 7777}
SERVER_ARGS = {"grpc": [], "ws": ["--work", "none"], "tcp": ["--model", "asyncio"]}
TARGET_OPTION = {"grpc": "--grpc-target", "ws": "--ws-url", "tcp": "--tcp-target"}
_LOG_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")
SPAWNED = ("All users spawned", "Spawning is complete")

Process = procs.Proc | Child


class ClusterError(AssertionError):
    """A condition of the experiment was not met in time; the message carries the logs."""


@dataclass
class Cluster:
    """Master on ``hosts[0]``, workers on ``hosts[1:-1]``, servers on ``hosts[-1]``."""

    net: netns.Network
    results: Path
    servers: dict[str, procs.Proc] = field(default_factory=dict)
    master: procs.Proc | None = None
    pools: list[WorkerPool] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    exits: dict[int, tuple[float, int]] = field(default_factory=dict)  # pid → (when, code)
    sups: list[Supervisor] = field(default_factory=list)  # one per worker host (its log dir)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sup in self.sups:
            sup.stop_all(timeout=10)  # the network then stops the rest

    @property
    def master_host(self) -> netns.Host:
        return self.net.hosts[0]

    @property
    def worker_hosts(self) -> list[netns.Host]:
        return self.net.hosts[1:-1]

    @property
    def server_host(self) -> netns.Host:
        return self.net.hosts[-1]

    @property
    def workers(self) -> list[Child]:
        """Every worker process started, replacements included, in start order."""
        return sorted((c for sup in self.sups for c in sup.children), key=lambda c: c.started)

    # -- starting --------------------------------------------------------------------------
    def start_servers(self, *kinds: str) -> None:
        host = self.server_host
        for kind in kinds:
            argv = commands.server_argv(
                kind, host=host.addr, port=SERVER_PORTS[kind], args=SERVER_ARGS[kind],
                python=procs.PYTHON,
            )  # fmt: skip
            proc = host.start(argv)
            assert proc.target == f"{host.addr}:{SERVER_PORTS[kind]}", proc.first_line
            self.servers[kind] = proc

    def crash_servers(self) -> None:
        """SIGKILL every server (their connections' state goes with them) and start them again
        on the same addresses."""
        kinds = list(self.servers)
        for proc in self.servers.values():
            proc.popen.send_signal(signal.SIGKILL)
            proc.popen.wait(timeout=10)
        self.servers = {}
        self.start_servers(*kinds)

    def target_args(self) -> list[str]:
        """The users' target options: every started server at the server host's address."""
        out = []
        for kind in self.servers:
            value = commands.target_value(kind, self.server_host.addr, SERVER_PORTS[kind])
            out += [TARGET_OPTION[kind], value]
        return out

    def start_master(
        self, *, users: int, run_time: str, transports: str, extra: list[str] | None = None
    ) -> procs.Proc:
        """The master, headless, with the Locust options ``python -m echoswarm run`` uses."""
        self.results.mkdir(parents=True, exist_ok=True)
        argv = commands.master_argv(
            LOCUSTFILE,
            expect_workers=len(self.worker_hosts),
            users=users,
            spawn_rate=users,
            run_time=run_time,
            results_dir=str(self.results),
            bind_host=self.master_host.addr,
            bind_port=MASTER_PORT,
            extra=["--only-summary", "--exit-code-on-error", "0", "--enable-rebalancing",
                   "--transports", transports, *self.target_args(), *(extra or [])],
            python=procs.PYTHON,
        )  # fmt: skip
        self.master = self.master_host.spawn(argv, log="master")
        self.mark("master_started")
        return self.master

    def start_workers(self, extra: list[str] | None = None) -> None:
        """One worker per worker host, each in a one-slot WorkerPool of its host."""
        for host in self.worker_hosts:
            argv = commands.worker_argv(
                LOCUSTFILE,
                master_host=self.master_host.addr,
                master_port=MASTER_PORT,
                extra=extra or [],
                python=procs.PYTHON,
            )
            sup = Supervisor(self.net.tmp_path / f"{host.hostname}-workers", cwd=procs.ROOT)
            pool = WorkerPool(sup, host.argv(argv), 1, say=lambda _text: None)
            self.sups.append(sup)
            pool.start()
            self.pools.append(pool)

    def worker_on(self, host: netns.Host) -> Child:
        """The current worker process of ``host``'s pool."""
        return self.pools[self.worker_hosts.index(host)].slots[0].child

    # -- watching --------------------------------------------------------------------------
    def mark(self, name: str) -> float:
        self.marks[name] = now = time.time()
        return now

    def run_json(self) -> dict[str, Any] | None:
        """The master's run.json as it is now (None before it exists)."""
        try:
            data = json.loads((self.results / "run.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def poll_exits(self) -> None:
        """Note the moment each process is first seen ended, and hand exited workers to their
        pool (replaced when they failed while the master runs: the orchestrator's rule)."""
        master_alive = self.master is not None and self.master.popen.poll() is None
        for pool in self.pools:
            for child in pool.sup.exited():
                pool.on_exit(child, time.time() - self.marks["master_started"], master_alive)
        everyone: list[Process] = [*self.servers.values(), *self.workers]
        if self.master is not None:
            everyone.append(self.master)
        for proc in everyone:
            if proc.pid not in self.exits:
                rc = proc.popen.poll()
                if rc is not None:
                    self.exits[proc.pid] = (time.time(), rc)

    def wait_until(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``condition`` (every 50 ms, watching exits) until it returns a truthy value."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll_exits()
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise ClusterError(f"not within {timeout:g}s: {what}\n{self.logs()}")
            time.sleep(0.05)  # polling files and processes, bounded by the deadline

    def hold(self, seconds: float) -> float:
        """Let the experiment run for ``seconds`` (a phase of its schedule, e.g. a cut's
        length — not a wait for a condition), watching exits meanwhile; returns the time."""
        until = time.time() + seconds
        self.wait_until(lambda: time.time() >= until, seconds + 5, f"{seconds:g}s to pass")
        return time.time()

    def wait_spawned(self, timeout: float = 40.0) -> float:
        """Until the master has spawned every user (its log says so); returns the time."""
        assert self.master is not None
        master = self.master
        self.wait_until(
            lambda: any(self.log_lines(master, s) for s in SPAWNED), timeout, "users spawned"
        )
        return self.mark("spawned")

    def wait_full_load(self, per_s: float, timeout: float = 40.0) -> float:
        """Until the master's live.json shows at least 90 % of ``per_s`` completions a second
        (its rate covers the last report interval, so the load has been full for a few seconds
        by then: a baseline before a fault); returns the time."""

        def rate() -> bool:
            try:
                live = json.loads((self.results / "live.json").read_text())
            except (OSError, ValueError):
                return False
            return float(live.get("rps") or 0.0) >= 0.9 * per_s

        self.wait_until(rate, timeout, f"{0.9 * per_s:g} completions/s")
        return self.mark("full_load")

    def wait_master(self, timeout: float) -> int:
        """The master's exit code (ClusterError with the logs if it is still running)."""
        assert self.master is not None
        master = self.master
        self.wait_until(lambda: master.popen.poll() is not None, timeout, "the master exits")
        return master.popen.wait()

    def wait_exits(self, procs_: list[Child], timeout: float, what: str) -> None:
        self.wait_until(lambda: all(p.poll() is not None for p in procs_), timeout, what)

    def exit_time(self, proc: Process) -> float | None:
        self.poll_exits()
        seen = self.exits.get(proc.pid)
        return seen[0] if seen else None

    def worker_entry(self, hostname: str) -> dict[str, Any] | None:
        """The run.json entry of the latest worker on ``hostname``."""
        run = self.run_json() or {}
        found = [w for w in run.get("workers", []) if w.get("host") == hostname]
        return found[-1] if found else None

    # -- logs ------------------------------------------------------------------------------
    @staticmethod
    def log_text(proc: Process) -> str:
        if isinstance(proc, Child):
            return proc.stderr_path.read_text(errors="replace")
        return proc.stderr_text()

    def log_lines(self, proc: Process, needle: str) -> list[str]:
        return [ln for ln in self.log_text(proc).splitlines() if needle in ln]

    def log_times(self, proc: Process, needle: str) -> list[float]:
        """Epoch times of the Locust log lines of ``proc`` containing ``needle`` (Locust stamps
        lines ``[YYYY-mm-dd HH:MM:SS,mmm]`` in local time)."""
        out = []
        for line in self.log_lines(proc, needle):
            m = _LOG_STAMP.match(line)
            if m:
                stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
                out.append(stamp + int(m.group(2)) / 1000)
        return out

    def logs(self, tail: int = 25) -> str:
        out = []
        named: list[tuple[str, Process | None]] = [("master", self.master)]
        named += [(w.name, w) for w in self.workers]
        for name, proc in named:
            if proc is not None:
                lines = self.log_text(proc).splitlines()[-tail:]
                out.append(f"--- {name} (pid {proc.pid}, rc {proc.popen.poll()}):")
                out.extend(lines)
        return "\n".join(out)
