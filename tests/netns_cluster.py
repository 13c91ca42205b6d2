"""A distributed echoswarm run across namespace hosts, for the fault tests.

    with netns.network(4, tmp_path) as net:
        c = Cluster(net, tmp_path / "run")              # h0 master, h1 h2 workers, h3 servers
        c.start_servers("tcp", "ws")
        c.start_master(users=20, run_time="30s", transports="tcp,ws")
        c.start_workers()
        c.wait_running()
        ...                                              # a fault: net.hosts[i].cut() / restore()
        rc = c.wait_master(60)

Every process binds its own host's address (``10.77.0.N``), never 127.0.0.1, and is started
with the project's own command lines (:mod:`echoswarm.orchestrate.commands`): the servers with
``server_argv``, the master with ``master_argv`` (headless, ``--expect-workers``, results in
``results``) and each worker with ``worker_argv`` pointing at the master's address. Each
process's stdout and stderr go to one log file (``Proc.stderr_text()``).

Times are epoch seconds (``time.time()``): every namespace shares the machine's clock, so they
compare directly with the epoch-ns stamps in ``events.parquet``. :meth:`Cluster.mark` notes a
moment of the experiment (a cut, a restore) for the figures.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoswarm.orchestrate import commands
from tests import netns, procs

LOCUSTFILE = "locustfiles/audio_stream.py"
MASTER_PORT = commands.DEFAULT_MASTER_PORT
SERVER_PORTS = {"grpc": 50051, "ws": 8765, "tcp": 7777}
SERVER_ARGS = {"grpc": [], "ws": ["--work", "none"], "tcp": ["--model", "asyncio"]}
TARGET_OPTION = {"grpc": "--grpc-target", "ws": "--ws-url", "tcp": "--tcp-target"}


_LOG_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")


class ClusterError(AssertionError):
    """A condition of the experiment was not met in time; the message carries the logs."""


@dataclass
class Cluster:
    """Master on ``hosts[0]``, workers on ``hosts[1:-1]``, servers on ``hosts[-1]``."""

    net: netns.Network
    results: Path
    servers: dict[str, procs.Proc] = field(default_factory=dict)
    master: procs.Proc | None = None
    workers: list[procs.Proc] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    exits: dict[int, tuple[float, int]] = field(default_factory=dict)  # pid → (when, code)

    @property
    def master_host(self) -> netns.Host:
        return self.net.hosts[0]

    @property
    def worker_hosts(self) -> list[netns.Host]:
        return self.net.hosts[1:-1]

    @property
    def server_host(self) -> netns.Host:
        return self.net.hosts[-1]

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
        self,
        *,
        users: int,
        run_time: str,
        transports: str,
        spawn_rate: float | None = None,
        workers: int | None = None,
        extra: list[str] | None = None,
    ) -> procs.Proc:
        self.results.mkdir(parents=True, exist_ok=True)
        argv = commands.master_argv(
            LOCUSTFILE,
            expect_workers=len(self.worker_hosts) if workers is None else workers,
            users=users,
            spawn_rate=spawn_rate or users,
            run_time=run_time,
            results_dir=str(self.results),
            bind_host=self.master_host.addr,
            bind_port=MASTER_PORT,
            extra=["--only-summary", "--transports", transports, *self.target_args(),
                   *(extra or [])],
            python=procs.PYTHON,
        )  # fmt: skip
        self.master = self.master_host.spawn(argv, log="master")
        self.mark("master_started")
        return self.master

    def start_worker(self, i: int, extra: list[str] | None = None) -> procs.Proc:
        """A worker on worker host ``i`` (a replacement, too: the same host again)."""
        argv = commands.worker_argv(
            LOCUSTFILE,
            master_host=self.master_host.addr,
            master_port=MASTER_PORT,
            extra=extra or [],
            python=procs.PYTHON,
        )
        proc = self.worker_hosts[i].spawn(argv, log=f"worker{i}-{len(self.workers)}")
        self.workers.append(proc)
        return proc

    def start_workers(self, extra: list[str] | None = None) -> None:
        for i in range(len(self.worker_hosts)):
            self.start_worker(i, extra)

    # -- watching --------------------------------------------------------------------------
    def mark(self, name: str) -> float:
        self.marks[name] = now = time.time()
        return now

    def run_json(self) -> dict[str, Any] | None:
        """The master's run.json as it is now (None before it exists or mid-rename)."""
        try:
            data = json.loads((self.results / "run.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def live(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.results / "live.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def poll_exits(self) -> None:
        """Note the moment each process is first seen ended (call it while waiting)."""
        for proc in [
            *self.servers.values(),
            *self.workers,
            *([self.master] if self.master else []),
        ]:
            if proc.pid not in self.exits:
                rc = proc.popen.poll()
                if rc is not None:
                    self.exits[proc.pid] = (time.time(), rc)

    def exit_of(self, proc: procs.Proc) -> tuple[float, int] | None:
        self.poll_exits()
        return self.exits.get(proc.pid)

    def wait_until(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``condition`` (every 50 ms, noting exits) until it returns a truthy value."""
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
        length — not a wait for a condition), noting exits meanwhile; returns the time."""
        until = time.time() + seconds
        self.wait_until(lambda: time.time() >= until, seconds + 5, f"{seconds:g}s to pass")
        return time.time()

    def worker_entry(self, hostname: str) -> dict[str, Any] | None:
        """The run.json entry of the (latest) worker on ``hostname``."""
        run = self.run_json() or {}
        found = [w for w in run.get("workers", []) if w.get("host") == hostname]
        return found[-1] if found else None

    def log_times(self, proc: procs.Proc, needle: str) -> list[float]:
        """Epoch times of the Locust log lines of ``proc`` containing ``needle`` (Locust stamps
        lines ``[YYYY-mm-dd HH:MM:SS,mmm]`` in local time)."""
        out = []
        for line in self.log_lines(proc, needle):
            m = _LOG_STAMP.match(line)
            if m:
                stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
                out.append(stamp + int(m.group(2)) / 1000)
        return out

    def wait_running(self, timeout: float = 45.0) -> dict[str, Any]:
        """Until every worker has reported samples to the master (run.json), i.e. the load is
        flowing end to end; returns that run.json."""
        n = len(self.worker_hosts)

        def flowing() -> dict[str, Any] | None:
            run = self.run_json()
            if run is None:
                return None
            busy = [w for w in run.get("workers", []) if w.get("samples", 0) > 0]
            return run if len(busy) >= n else None

        run: dict[str, Any] = self.wait_until(flowing, timeout, f"{n} workers reporting samples")
        return run

    def wait_master(self, timeout: float) -> int:
        """The master's exit code (ClusterError with the logs if it is still running)."""
        assert self.master is not None
        master = self.master
        self.wait_until(lambda: master.popen.poll() is not None, timeout, "the master exits")
        return master.popen.wait()

    def wait_exits(self, proc_list: list[procs.Proc], timeout: float, what: str) -> None:
        self.wait_until(lambda: all(p.popen.poll() is not None for p in proc_list), timeout, what)

    def logs(self, tail: int = 25) -> str:
        out = []
        for name, proc in [
            ("master", self.master),
            *((f"worker {i}", w) for i, w in enumerate(self.workers)),
        ]:
            if proc is None:
                continue
            lines = proc.stderr_text().splitlines()[-tail:]
            out.append(f"--- {name} (pid {proc.pid}, rc {proc.popen.poll()}):\n" + "\n".join(lines))
        return "\n".join(out)

    def log_lines(self, proc: procs.Proc, needle: str) -> list[str]:
        return [ln for ln in proc.stderr_text().splitlines() if needle in ln]
