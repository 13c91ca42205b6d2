"""The command lines of every process echoswarm starts — one place, used by the local
orchestrator (``python -m echoswarm run``) and by the EC2 node units (``infra``), so a node runs
exactly what a local run runs.

All functions return argv lists (no shell). ``python`` is the interpreter to use (the venv's).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

DEFAULT_MASTER_PORT = 5557
DEFAULT_WEB_PORT = 8089
SERVER_KINDS = ("grpc", "ws", "tcp", "jobs")
TCP_MODELS = (
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
"""``python -m servers tcp --model`` choices (DESIGN.md's nine, plus uvloop): servers and sweeps
take them from here."""
DEFAULT_SERVER_PORTS = {"grpc": 50051, "ws": 8765, "tcp": 7777, "jobs": 8000}


def server_argv(
    kind: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    args: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """``python -m servers KIND --host H --port P ARGS``."""
    if kind not in SERVER_KINDS:
        raise ValueError(f"unknown server kind {kind!r} (expected one of {SERVER_KINDS})")
    return [python, "-m", "servers", kind, "--host", host, "--port", str(port), *args]


def target_value(kind: str, host: str, port: int) -> str:
    """How a server's address is passed to the users: host:port, or the ws:// / http:// URL."""
    shown = f"[{host}]" if ":" in host else host
    if kind == "ws":
        return f"ws://{shown}:{port}/echo"
    if kind == "jobs":
        return f"http://{shown}:{port}"
    return f"{shown}:{port}"


def master_argv(
    locustfile: str,
    *,
    expect_workers: int,
    users: int,
    spawn_rate: float,
    run_time: str | None,
    results_dir: str,
    bind_host: str = "127.0.0.1",
    bind_port: int = DEFAULT_MASTER_PORT,
    web: bool = False,
    web_host: str = "127.0.0.1",
    web_port: int = DEFAULT_WEB_PORT,
    extra: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """A Locust master writing Locust's CSV/HTML and echoswarm's results into ``results_dir``."""
    argv = [
        *_locust(python, locustfile),
        "--master",
        "--master-bind-host",
        bind_host,
        "--master-bind-port",
        str(bind_port),
        "--expect-workers",
        str(expect_workers),
        "-u",
        str(users),
        "-r",
        _num(spawn_rate),
        "--csv",
        f"{results_dir}/locust",
        "--html",
        f"{results_dir}/locust_report.html",
        "--results-dir",
        results_dir,
    ]
    if run_time:
        argv += ["-t", run_time]
    if web:
        argv += ["--web-host", web_host, "--web-port", str(web_port), "--autostart"]
    else:
        argv += ["--headless"]
    return argv + list(extra)


def worker_argv(
    locustfile: str,
    *,
    master_host: str = "127.0.0.1",
    master_port: int = DEFAULT_MASTER_PORT,
    processes: int | None = None,
    extra: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """A Locust worker (optionally forking ``processes`` worker processes itself)."""
    argv = [
        *_locust(python, locustfile),
        "--worker",
        "--master-host",
        master_host,
        "--master-port",
        str(master_port),
    ]
    if processes:
        argv += ["--processes", str(processes)]
    return argv + list(extra)


def _locust(python: str, locustfile: str) -> list[str]:
    """Locust from the same interpreter (so the venv's packages and our plugins load)."""
    return [python, "-m", "locust", "-f", locustfile]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
