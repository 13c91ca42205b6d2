"""Shared fixtures: real servers on loopback, and a guard that no test leaves processes or
listening ports behind."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests import procs

INPROC = Path(__file__).resolve().parent / "inproc"
_GEVENT_IMPORT = re.compile(
    r"^(?:import|from) (?:gevent|locust|echoswarm\.users|echoswarm\.collect|echoswarm\.webui)\b",
    re.MULTILINE,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--inproc",
        action="store_true",
        help="run only tests/inproc (Locust in this process, gevent-patched first)",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/inproc runs in its own session (``--inproc``); the rest never share it."""
    inside = collection_path == INPROC or INPROC in collection_path.parents
    if not inside and collection_path.name.startswith("test_") and collection_path.suffix == ".py":
        if _GEVENT_IMPORT.search(collection_path.read_text(errors="replace")):
            raise pytest.UsageError(
                f"{collection_path.name} imports gevent/Locust into the pytest process: "
                "move it to tests/inproc/ (run there by `pytest --inproc`)"
            )
    if config.getoption("--inproc"):
        if collection_path.is_file() and collection_path.suffix == ".py" and not inside:
            return True
        return None
    return True if inside else None


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fail a test that leaves a child process (and hence a listening port) running."""
    before = {p.pid for p in procs.descendants()}
    yield
    leftovers = []
    deadline_checks = 50
    for _ in range(deadline_checks):  # children may be mid-exit; poll briefly, never sleep blind
        leftovers = [p for p in procs.descendants() if p.pid not in before and _running(p)]
        if not leftovers:
            break
        psutil.wait_procs(leftovers, timeout=0.1)
    if leftovers:
        names = []
        for p in leftovers:
            try:
                names.append((p.pid, " ".join(p.cmdline()[:6])))
            except psutil.Error:
                continue
        for p in leftovers:
            try:
                p.kill()
            except psutil.Error:
                pass
        if names:
            pytest.fail(f"test left processes running: {names}")


def _running(p: psutil.Process) -> bool:
    """Alive and not a zombie (a process may exit between listing and asking)."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., procs.Proc]]:
    """``start_server("tcp", "--model", "asyncio")`` → a listening Proc, stopped at teardown."""
    started: list[procs.Proc] = []

    def _start(kind: str, *args: str, **kw: Any) -> procs.Proc:
        p = procs.server(kind, *args, tmp_path=tmp_path / f"{kind}-{len(started)}", **kw)
        started.append(p)
        return p

    yield _start
    for p in started:
        p.stop()


def require_tool(name: str) -> str:
    """Path of a system tool; skip (or fail in CI, where sysdeps must be present) if missing."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not installed (run scripts/sysdeps.sh as root)"
    if os.environ.get("ECHOSWARM_REQUIRE_SYSDEPS") == "1":
        pytest.fail(message)
    pytest.skip(message)
