"""A running ``python -m echoswarm run`` under test, and everything it started: wait for its
files, find its children, check that nothing outlives it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from tests.procs import PYTHON, ROOT, env, listening_ports_of


def run_argv(results: Path, *args: str) -> list[str]:
    return [PYTHON, "-m", "echoswarm", "run", "--results", str(results), *args]


class Orchestrator:
    """A running `python -m echoswarm run` and everything it started."""

    def __init__(self, argv: list[str], tmp_path: Path) -> None:
        self.out = (tmp_path / "orchestrator.out").open("w+")
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, env=env(), stdout=self.out, stderr=subprocess.STDOUT, text=True
        )
        self.proc = psutil.Process(self.popen.pid)
        self.seen: set[int] = set()

    def children(self) -> list[psutil.Process]:
        try:
            kids = self.proc.children(recursive=True)
        except psutil.Error:
            return []
        self.seen.update(k.pid for k in kids)
        return kids

    def child_matching(self, needle: str, timeout: float = 60) -> psutil.Process:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for k in self.children():
                try:
                    if needle in " ".join(k.cmdline()):
                        return k
                except psutil.Error:
                    continue
            time.sleep(0.1)  # polling the process table with a deadline
        raise AssertionError(f"no child process matching {needle!r}; output:\n{self.output()}")

    def wait_for_file(self, path: Path, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert self.popen.poll() is None, f"orchestrator exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"{path} never appeared:\n{self.output()}"
            self.children()
            time.sleep(0.1)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Poll ``condition`` until it holds (the orchestrator must still be running)."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.popen.poll() is None, f"orchestrator exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {what} after {timeout}s:\n{self.output()}"
            self.children()
            time.sleep(0.1)  # polling with a deadline

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise AssertionError(
                f"orchestrator still running after {timeout}s:\n{self.output()}"
            ) from None

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def assert_no_leftovers_within(self, timeout: float) -> None:
        """Every child gone within ``timeout`` (after the orchestrator itself was killed)."""
        deadline = time.monotonic() + timeout
        while any(psutil.pid_exists(p) and _not_zombie(p) for p in self.seen):
            assert time.monotonic() < deadline, "children outlived their orchestrator"
            time.sleep(0.1)  # polling with a deadline
        self.assert_no_leftovers()

    def assert_no_leftovers(self) -> None:
        alive = [p for p in self.seen if psutil.pid_exists(p) and _not_zombie(p)]
        assert not alive, f"children still running: {alive}"
        assert not listening_ports_of(self.seen), "a child still holds a listening port"


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


Orchestrate = Callable[[list[str]], Orchestrator]


def orchestrations(tmp_path: Path) -> Iterator[Orchestrate]:
    """The body of an ``orchestrate`` fixture: start orchestrators, kill what is left after."""
    started: list[Orchestrator] = []

    def _start(argv: list[str]) -> Orchestrator:
        o = Orchestrator(argv, tmp_path)
        started.append(o)
        return o

    yield _start
    for o in started:
        if o.popen.poll() is None:
            o.popen.kill()
            o.popen.wait()
        for pid in o.seen:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass


def a_worker(o: Orchestrator, exclude: set[int] = frozenset()) -> psutil.Process:  # type: ignore[assignment]
    """A Locust worker process of this run (not the pdeath shim)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for k in o.children():
            try:
                cmd = k.cmdline()
            except psutil.Error:
                continue
            if "--worker" in cmd and "echoswarm.pdeath" not in cmd and k.pid not in exclude:
                return k
        time.sleep(0.1)  # polling the process table with a deadline
    raise AssertionError("no worker process found")


def read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data
