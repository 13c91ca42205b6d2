"""Run a locustfile's users with Locust as a library (``Environment`` + ``LocalRunner``) and
print every sample as JSON — the in-process half of the user tests.

It runs in a child process (``python -m tests.fakes.local_run``) so gevent's monkey-patching
and gRPC's gevent mode never leak into the pytest process.

    python -m tests.fakes.local_run LOCUSTFILE -u USERS -t SECONDS [--classes A,B] -- OPTIONS

Prints ``STARTED`` once all users are spawned and every echoswarm user has recorded its first
``connect`` (ok or not: the gRPC ones connect through the driver process, which starts with
Locust), then one JSON object: ``samples`` (one list per
sample: type, name, latency_ns, error, seq, conn_id, lag_ns, start_ns, user_id, nbytes), Locust's
``stats`` (per row: count, failures) and ``errors`` (unhandled greenlet exceptions).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

import gevent
import gevent.util
import locust  # noqa: I001  (monkey-patch before anything else)
from locust.argument_parser import parse_options
from locust.env import Environment
from locust.util.load_locustfile import load_locustfile

import echoswarm.users.options  # noqa: F401  (registers our options before parsing)
from echoswarm.users.sink import on_samples as on_samples_hook


def main(argv: list[str]) -> int:
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    else:
        extra = []
    parser = argparse.ArgumentParser()
    parser.add_argument("locustfile")
    parser.add_argument("-u", type=int, default=1)
    parser.add_argument("-t", type=float, default=2.0)
    parser.add_argument("--classes", default="")
    args = parser.parse_args(argv)
    # A hung run can be inspected: kill -USR1 <pid> prints every greenlet's stack to stderr.
    signal.signal(signal.SIGUSR1, lambda *_: gevent.util.print_run_info(file=sys.stderr))

    user_classes, _ = load_locustfile(args.locustfile)
    classes = list(user_classes.values())
    if args.classes:
        wanted = args.classes.split(",")
        classes = [c for c in classes if c.__name__ in wanted]
    # Locust's full parser (ours and every plugin's options), as the locust command builds it
    parsed = parse_options(["-f", args.locustfile, *extra])
    env = Environment(
        user_classes=classes, events=locust.events, parsed_options=parsed, host=parsed.host
    )
    rows: list[list[Any]] = []

    def on_samples(samples: list[Any], **_kw: Any) -> None:
        for s in samples:
            rows.append(
                [
                    s.request_type,
                    s.name,
                    s.latency_ns,
                    s.error,
                    s.seq,
                    s.conn_id,
                    s.lag_ns,
                    s.start_ns,
                    s.user_id,
                    s.nbytes,
                ]
            )

    on_samples_hook.add_listener(on_samples)
    runner = env.create_local_runner()
    env.events.init.fire(environment=env, runner=runner, web_ui=None)
    runner.start(args.u, spawn_rate=max(args.u, 1), wait=False)
    with gevent.Timeout(10, False):  # users that stop early must not hang the harness
        while runner.user_count < args.u:
            gevent.sleep(0.01)
        by_name = {c.__name__: c for c in classes}
        ours = sum(  # users of echoswarm's transports (they record a connect row first)
            n for name, n in runner.user_classes_count.items()
            if getattr(by_name.get(name), "transport", "")
        )  # fmt: skip
        while sum(1 for r in rows if r[1].endswith("connect")) < ours:
            gevent.sleep(0.01)
    print("STARTED", flush=True)
    gaps: list[tuple[float, float]] = []

    def watch_loop() -> None:  # how late the event loop runs a 10 ms timer (blocking check)
        last = time.monotonic()
        while True:
            gevent.sleep(0.01)
            now = time.monotonic()
            if now - last > 0.03:
                gaps.append((round(now - started, 3), round(now - last - 0.01, 3)))
            last = now

    started = time.monotonic()
    watcher = gevent.spawn(watch_loop)
    gevent.sleep(args.t)
    stop_at = round(time.monotonic() - started, 3)
    runner.quit()
    quit_took = round(time.monotonic() - started - stop_at, 3)
    watcher.kill()
    stats = {
        f"{e.method} {e.name}": {"count": e.num_requests, "failures": e.num_failures}
        for e in env.stats.entries.values()
    }
    json.dump(
        {
            "samples": rows,
            "stats": stats,
            "errors": len(runner.exceptions),
            "loop_gaps": gaps,
            "stop_at": stop_at,
            "quit_took": quit_took,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
