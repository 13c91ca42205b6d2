"""Child-process supervision for local runs: start, watch, and always stop.

Every child (echo server, Locust master, Locust worker) is started through
``python -m echoswarm.pdeath`` (so it gets SIGTERM if this process dies, even by SIGKILL), in a
session of its own (a terminal Ctrl-C reaches only the orchestrator, which then stops children in
the right order: master first so it can collect the workers' last reports, then workers, then
servers), with stdout and stderr going to files in the run's ``logs/`` folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from echoswarm.listening import LISTENING_RE


class ChildError(RuntimeError):
    """A child failed to start or died; the message is one line for the user."""


@dataclass
class Child:
    """One supervised process."""

    name: str
    role: str  # server | master | worker
    argv: list[str]
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    started: float = field(default_factory=time.monotonic)
    host: str = ""
    port: int = 0
    reported_exit: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def last_lines(self, n: int = 3) -> str:
        """The last non-empty lines of its stderr (then stdout), for error messages."""
        for path in (self.stderr_path, self.stdout_path):
            try:
                lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
            except OSError:
                continue
            if lines:
                return " | ".join(line.strip() for line in lines[-n:])
        return "(no output)"

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill_group(self) -> None:
        """SIGKILL the child's whole session (catches grandchildren such as forked workers)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


class Supervisor:
    """Starts children and guarantees they are all gone when :meth:`stop_all` returns."""

    def __init__(self, log_dir: Path, cwd: Path | None = None) -> None:
        self.log_dir = log_dir
        self.cwd = cwd or Path.cwd()
        self.children: list[Child] = []

    def start(
        self, name: str, role: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = self.log_dir / f"{name}.out"
        err = self.log_dir / f"{name}.log"
        child_env = dict(os.environ if env is None else env)
        child_env["ECHOSWARM_PARENT_PID"] = str(os.getpid())
        child_env["PYTHONUNBUFFERED"] = "1"
        root = str(Path(__file__).resolve().parent.parent)
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, child_env.get("PYTHONPATH", "")) if p
        )
        with out.open("wb") as fout, err.open("wb") as ferr:
            popen = subprocess.Popen(
                [sys.executable, "-m", "echoswarm.pdeath", *argv],
                stdin=subprocess.DEVNULL,
                stdout=fout,
                stderr=ferr,
                cwd=self.cwd,
                env=child_env,
                start_new_session=True,
            )
        child = Child(name, role, list(argv), popen, out, err)
        self.children.append(child)
        return child

    def wait_listening(self, child: Child, timeout: float = 30.0) -> tuple[str, int]:
        """Wait for the child's ``LISTENING kind host:port`` line (its first stdout line)."""
        deadline = time.monotonic() + timeout
        while True:
            text = child.stdout_path.read_text(errors="replace")
            if "\n" in text:
                first = text.split("\n", 1)[0]
                m = LISTENING_RE.match(first)
                if not m:
                    raise ChildError(f"{child.name}: unexpected first line {first!r}")
                child.host, child.port = m.group(2), int(m.group(3))
                return child.host, child.port
            rc = child.poll()
            if rc is not None:
                raise ChildError(
                    f"{child.name} exited with code {rc} before listening: {child.last_lines()}"
                )
            if time.monotonic() > deadline:
                raise ChildError(f"{child.name} did not print LISTENING within {timeout:g}s")
            time.sleep(0.02)  # polling a file the child writes; the deadline bounds it

    def exited(self) -> list[Child]:
        """Children that have exited and were not reported yet (each reported once)."""
        out = []
        for c in self.children:
            if not c.reported_exit and c.poll() is not None:
                c.reported_exit = True
                out.append(c)
        return out

    def stop(self, children: Sequence[Child], sig: int, timeout: float) -> None:
        """Signal ``children``, wait up to ``timeout``, then SIGKILL what is left."""
        for c in children:
            c.signal(sig)
        deadline = time.monotonic() + timeout
        for c in children:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                c.popen.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                c.kill_group()
                c.popen.wait(timeout=5)
            c.kill_group()  # leftovers of its session (forked processes) go too

    def stop_all(self, timeout: float = 10.0) -> None:
        """Master, then workers, then servers; nothing survives this call."""
        for role, sig in (("master", signal.SIGTERM), ("worker", signal.SIGTERM)):
            self.stop([c for c in self.children if c.role == role], sig, timeout)
        self.stop([c for c in self.children if c.role == "server"], signal.SIGTERM, timeout)
        for c in self.children:
            c.kill_group()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for Locust's master and web UI, which cannot take 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_tcp(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until a TCP connect to host:port succeeds (servers' readiness)."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise ChildError(f"{host}:{port} not accepting connections after {timeout:g}s ({last})")
