"""Every use of Locust's private or undocumented API, in one place (locust 2.47).

Each function names what it relies on, so a Locust upgrade is checked here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from locust.runners import STATE_MISSING


def send_report_now(runner: Any) -> None:
    """Fire ``report_to_master`` and send the report at once (``WorkerRunner._send_stats``:
    exactly what the worker's stats loop does every interval)."""
    runner._send_stats()


def tell_workers_to_quit(runner: Any) -> None:
    """Send every connected worker Locust's own ``quit`` message (``runner.server`` and
    ``locust.rpc.Message``, as ``MasterRunner.quit`` does), without tearing the master down."""
    from locust.rpc import Message

    for client in list(runner.clients.all):
        runner.server.send_to_client(Message("quit", None, client.id))


def wrap_quit(runner: Any, before: Callable[[], None]) -> None:
    """Run ``before`` first whenever the master quits (``runner.quit`` replaced: stock Locust
    stops listening 0.5 s after telling the workers to quit)."""
    original = runner.quit

    def quit_after() -> None:
        before()
        original()

    runner.quit = quit_after


def workers(runner: Any) -> list[Any]:
    """The master's worker nodes (``runner.clients.all``: id, state, heartbeat)."""
    return list(runner.clients.all)


def missing(node: Any) -> bool:
    """A worker whose heartbeats stopped (Locust marks it missing)."""
    return bool(node.state == STATE_MISSING)


def worker_ids(runner: Any) -> set[str]:
    return {str(cid) for cid in runner.clients.keys()}


def set_master_heartbeat_timeout(seconds: float) -> None:
    """How long a worker waits for a silent master before quitting
    (``locust.runners.MASTER_HEARTBEAT_TIMEOUT``, 60 s in stock Locust; the worker's
    ``heartbeat_timeout_checker`` reads the module global at every check)."""
    import locust.runners

    locust.runners.MASTER_HEARTBEAT_TIMEOUT = seconds  # type: ignore[assignment]


def master_heartbeat_timeout() -> float:
    import locust.runners

    return float(locust.runners.MASTER_HEARTBEAT_TIMEOUT)
