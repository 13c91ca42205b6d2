"""Every use of Locust's private or undocumented API, in one place (locust 2.47).

Each function names what it relies on, so a Locust upgrade is checked here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType
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


def log_requests(stats: Any, method: str, name: str, response_times_ms: list[float],
                 content_lengths: list[int]) -> None:  # fmt: skip
    """Log many requests of one row into Locust's stats at once — what ``stats.log_request``
    does per request (``StatsEntry.log``: counts, the per-second count, sum/min/max, the rounded
    response-time histogram, content length, the response-times cache), for the row's entry and
    the total, in one pass instead of one event dispatch and two ``log`` calls per message."""
    import time as _time

    from locust.stats import bucket_response_time

    n = len(response_times_ms)
    if not n:
        return
    now = _time.time()
    t = int(now)
    buckets: dict[int, int] = {}
    for rt in response_times_ms:
        b = bucket_response_time(rt)
        buckets[b] = buckets.get(b, 0) + 1
    total_rt, low, high = sum(response_times_ms), min(response_times_ms), max(response_times_ms)
    length = sum(content_lengths)
    for entry in (stats.total, stats.get(name, method)):
        if entry.use_response_times_cache and entry.last_request_timestamp:
            if t > int(entry.last_request_timestamp):
                entry._cache_response_times(t - 1)
        entry.num_requests += n
        entry.num_reqs_per_sec[t] += n
        entry.last_request_timestamp = now
        entry.total_response_time += total_rt
        entry.min_response_time = (
            low if entry.min_response_time is None else min(entry.min_response_time, low)
        )
        entry.max_response_time = max(entry.max_response_time, high)
        times = entry.response_times
        for b, count in buckets.items():
            times[b] += count
        entry.total_content_length += length


class _CallerOnlyInspect:
    """``inspect`` as ``locust.runners`` sees it, minus the costly part of one debug line.

    ``Runner.stop`` calls ``inspect.getframeinfo(inspect.stack()[1][0])`` only to log, at debug
    level, who called it. Both read source files (and ``getmodule`` walks every loaded module
    the first time), which held a worker's event loop for 40-80 ms at the end of each test:
    every reply arriving meanwhile was timed that much late (0.3-0.5 % of a 15 s run's
    messages; its p99.9 36-62 ms instead of a few). Here the frames are taken as they are and
    the caller's file and line are read off its code object: the log line says the same."""

    def __getattr__(self, name: str) -> Any:
        import inspect

        return getattr(inspect, name)

    @staticmethod
    def stack(context: int = 1) -> list[tuple[Any, ...]]:
        import sys

        this = sys._getframe(1)  # Runner.stop
        return [(this,), (this.f_back,)]

    @staticmethod
    def getframeinfo(frame: Any, context: int = 1) -> Any:
        import inspect

        code = frame.f_code
        return inspect.Traceback(code.co_filename, frame.f_lineno, code.co_name, None, None)


def cheap_stop_logging() -> None:
    """Install :class:`_CallerOnlyInspect` as ``locust.runners.inspect`` (once per process)."""
    import locust.runners

    if not isinstance(locust.runners.inspect, _CallerOnlyInspect):
        locust.runners.inspect = _CallerOnlyInspect()  # type: ignore[assignment]


def started_by_locust_main() -> bool:
    """Whether Locust's own command line (``locust.main.main``, which fires ``init``) is on the
    caller's stack: a ``locust`` process, not a runner built in code (tests, the bench)."""
    import sys

    import locust.main

    code = locust.main.main.__code__
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def ctrl_c_reaches_main() -> None:
    """Make SIGINT (Ctrl-C, and how the orchestrator and the sweep stop a master) always reach
    Locust's main greenlet, which shuts Locust down by catching ``KeyboardInterrupt`` around
    its join (``locust.main.main``).

    Stock Locust leaves SIGINT to Python, which raises ``KeyboardInterrupt`` in whichever
    greenlet is running when the signal lands. Landing in the master's ``client_listener``
    while it waits for a message, it is logged and dropped (``runners.py``: "Other greenlets
    should catch this"): the master ran on to its ``-t``. Landing while it handles a worker's
    message — our results plugin merges every report there — it kills ``client_listener``: a
    traceback, the worker declared missing, its last report lost, exit 2. The stats printer,
    history and CSV loops end quietly on it. Here SIGINT is a gevent
    signal watcher (as Locust's own SIGTERM handler is): it runs in a greenlet of its own and
    throws ``KeyboardInterrupt`` into the main greenlet. Call it from the ``init`` event, which
    ``locust.main.main`` fires in its main greenlet."""
    import signal

    import gevent

    main = gevent.getcurrent()  # locust.main.main's greenlet: it fires init

    def interrupt() -> None:
        if not main.dead:
            main.throw(KeyboardInterrupt)

    gevent.signal_handler(signal.SIGINT, interrupt)


def rebalance_after_every_dispatch(environment: Any) -> None:
    """Keep the master able to rebalance after a dispatch that only moved users.

    Locust 2.47's ``UsersDispatcher._dispatcher`` returns early from a dispatch that only
    rebalances (the user count already at its target: what happens when a worker goes
    missing) without clearing ``_dispatch_in_progress``. From then on the master believes a
    dispatch is running and skips every later rebalance — in particular when the missing
    worker heals: its users never stopped, the others carry them too, and the run goes on at
    150 % of the load asked for while the master counts 100 % (``docs/faults.md``). The
    master's ``spawning_complete`` fires at the end of ``MasterRunner.start``, once the
    dispatch is over, so the flag is cleared there."""
    runner = environment.runner

    def dispatch_over(**_kw: Any) -> None:
        dispatcher = getattr(runner, "_users_dispatcher", None)
        if dispatcher is not None:
            dispatcher._dispatch_in_progress = False

    environment.events.spawning_complete.add_listener(dispatch_over)
