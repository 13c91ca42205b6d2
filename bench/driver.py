"""Child process of the benchmark: run one client inside a real Locust runner and meter it.

    python -m bench.driver pingpong --client ours|naive --transport tcp|ws|grpc
        --target T --conns N --warmup W --messages M [--frame-bytes 3200] [--profile FILE]
    python -m bench.driver paced --transport tcp --target T --steps 100,500,1000
        --seconds S [--settle-s 1]

It builds a Locust ``Environment`` with Locust's own parsed options (so our users read
``--mode``, targets and frame size exactly as under ``locust``), a ``LocalRunner``, and a
listener on ``events.request``. It runs in its own process so gevent's patching and gRPC's
gevent mode never leak into the orchestrator, and so ``getrusage(RUSAGE_SELF)`` is the cost of
the load generator alone (every thread of it, gRPC's C-core threads included) and not of the
servers or the orchestrator.

``pingpong``: starts N users (one connection each) at once; once spawning is complete and W
per-message rows have arrived, reads CPU time and a wall clock, then again after M more rows,
and prints one JSON line: messages, cpu_s, user_s, sys_s, wall_s, failures. Connection setup and
interpreter start-up are outside the window; Locust's stats and our results plugin are inside
it, as they are in a real run.

``paced``: ramps the user count through the steps (paced mode, 3200 B every 100 ms); after each
step's spawn completes and a settling time, collects the sender lag of every message for S
seconds and prints one JSON line per step: streams, messages, lag p50/p99/max, latency p50/p99,
failures and the process's CPU utilisation during the window.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import locust  # noqa: I001  (gevent monkey-patching before anything else)
import numpy as np
import psutil
from gevent.event import Event
from locust.argument_parser import get_parser
from locust.env import Environment

from bench.stats import nearest_rank, summary
from echoswarm import hdr
from echoswarm.measure import now_ns
from echoswarm.users import options
from echoswarm.users.sink import on_samples

TARGET_OPTION = {"tcp": "--tcp-target", "ws": "--ws-url", "grpc": "--grpc-target"}


def ours_user(transport: str) -> type[locust.User]:
    """A concrete subclass of our abstract user for ``transport``, running one long stream."""
    if transport == "tcp":
        from echoswarm.users.tcp import TcpUser

        return type("BenchTcpUser", (TcpUser,), {"pattern": "stream"})
    if transport == "ws":
        from echoswarm.users.websocket import WebSocketUser

        return type("BenchWsUser", (WebSocketUser,), {"pattern": "session"})
    from echoswarm.users.grpc import GrpcUser

    return type("BenchGrpcUser", (GrpcUser,), {"pattern": "bidi"})


def naive_user(transport: str) -> type[locust.User]:
    from bench.naive import NAIVE_USERS

    base = NAIVE_USERS[transport]
    return type(f"Bench{base.__name__}", (base,), {})


RESULTS = Path(__file__).resolve().parent.parent / "build" / "bench-results"


def locust_options(targets: dict[str, str], extra: list[str]) -> Any:
    """Locust's full option namespace (ours included), as ``locust --headless ...`` parses it.

    ``targets`` maps transports to their server. Our results plugin
    (``echoswarm.plugins.collector``, registered when our users are imported) writes under
    ``build/bench-results/`` so benchmark runs do not litter ``results/``.
    """
    parser = get_parser(default_config_files=[])
    argv = ["--headless", *extra]
    for transport, target in targets.items():
        argv += [TARGET_OPTION[transport], target]
    if any(a.dest == "results_dir" for a in parser._actions):
        argv += ["--results-dir", str(results_dir())]
    return parser.parse_args(argv)


def results_dir() -> Path:
    return RESULTS / f"run-{os.getpid()}"


def make_runner(env: Environment, plugins: bool = True) -> Any:
    """A LocalRunner, with Locust's ``init`` event fired as ``locust`` itself does, so plugins
    (our results collector) attach exactly as in a command-line run (``plugins=False``: bare
    Locust, to see what the plugins cost)."""
    runner = env.create_local_runner()
    if plugins:
        env.events.init.fire(environment=env, runner=runner, web_ui=None)
    return runner


def cpu_s() -> tuple[float, float]:
    """(user, system) CPU seconds of this process and its children — our gRPC users' driver
    process runs the RPCs, so it is part of the load generator's cost."""
    ru = resource.getrusage(resource.RUSAGE_SELF)  # (µs resolution; children: clock ticks)
    user, system = ru.ru_utime, ru.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            u, s = child.cpu_times()[:2]
        except psutil.Error:
            continue
        user, system = user + u, system + s
    return user, system


def runqueue_wait_s() -> float:
    """Seconds this process's main thread has spent runnable but waiting for a CPU (Linux
    schedstat; 0 elsewhere): how much the machine's other load delayed the event loop."""
    try:
        with open("/proc/self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class PingPongMeter:
    """Counts per-message rows; snapshots CPU and wall time at the window's two ends."""

    def __init__(self, env: Environment, warmup: int, messages: int) -> None:
        self.warmup = warmup
        self.messages = messages
        self.spawned = False
        self.count = 0  # rows after spawning completed
        self.failures = 0
        self.latencies_ms: list[float] = []  # of the window: the fidelity check compares them
        self.start: tuple[int, float, tuple[float, float]] | None = None
        self.end: tuple[int, float, tuple[float, float]] | None = None
        self.done = Event()
        env.events.request.add_listener(self.on_request)  # the naive users fire these
        on_samples.add_listener(self.on_samples)  # ours hand samples over in batches
        env.events.spawning_complete.add_listener(self.on_spawned)

    def on_spawned(self, **_kw: Any) -> None:
        self.spawned = True

    def on_request(
        self, name: str, response_time: float = 0.0, exception: Any = None, **_kw: Any
    ) -> None:
        if name.endswith("msg"):
            self._count([(response_time, exception is not None)])

    def on_samples(self, samples: list[Any], **_kw: Any) -> None:
        # A batch counts as a whole: the CPU snapshot is taken when all of it has been handled.
        msgs = [
            (s.latency_ns / 1e6, s.error is not None) for s in samples if s.name.endswith("msg")
        ]
        if msgs:
            self._count(msgs)

    def _count(self, msgs: list[tuple[float, bool]]) -> None:
        if not self.spawned or self.end is not None:
            return
        self.count += len(msgs)
        if self.start is not None:
            self.latencies_ms += [ms for ms, _ in msgs]
            self.failures += sum(1 for _, failed in msgs if failed)
        if self.start is None and self.count >= self.warmup:
            self.start = (self.count, time.perf_counter(), cpu_s())
        elif self.start is not None and self.count - self.start[0] >= self.messages:
            self.end = (self.count, time.perf_counter(), cpu_s())
            self.done.set()

    def result(self) -> dict[str, Any]:
        if self.start is None or self.end is None:
            return {"error": f"only {self.count} messages arrived before the deadline"}
        (n0, w0, (u0, s0)), (n1, w1, (u1, s1)) = self.start, self.end
        lat = sorted(self.latencies_ms)
        return {
            "p50_us": percentile(lat, 0.50) * 1e3,
            "p99_us": percentile(lat, 0.99) * 1e3,
            "messages": n1 - n0,
            "cpu_s": (u1 - u0) + (s1 - s0),
            "user_s": u1 - u0,
            "sys_s": s1 - s0,
            "wall_s": w1 - w0,
            "failures": self.failures,
        }


def run_pingpong(args: argparse.Namespace) -> dict[str, Any]:
    extra = ["--mode", "pingpong", "--frame-bytes", str(args.frame_bytes)]
    # The user's modules first: importing them registers their options with Locust's parser.
    cls = ours_user(args.transport) if args.client == "ours" else naive_user(args.transport)
    opts = locust_options({args.transport: args.target}, extra)
    env = Environment(user_classes=[cls], events=locust.events, parsed_options=opts)
    meter = PingPongMeter(env, args.warmup, args.messages)
    runner = make_runner(env, not args.no_plugins)
    profiler = _start_profile(args.profile)
    runner.start(args.conns, spawn_rate=max(args.conns * 100, 1000))
    meter.done.wait(args.timeout_s)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    # No runner.quit(): the window is over and a graceful stop (drains, final results) only
    # costs wall time; main() exits the process right after printing.
    return meter.result()


def _start_profile(path: str | None) -> Any:
    if not path:
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def percentile(sorted_values: list[Any], q: float) -> Any:
    """Nearest rank (0 for no values)."""
    return nearest_rank(sorted_values, q * 100) if sorted_values else 0


def tune_gc(env: Environment) -> None:
    """The experiment behind the README's GC finding: a worker holding 1,000 streams has enough
    long-lived objects that a full (gen2) collection stalls the event loop for tens of ms of
    CPU, which alone breaks a 2 ms lag p99. Freezing what exists once spawning completes (it
    is never garbage) and making full collections rare removes the largest stalls."""
    gc.set_threshold(700, 10, 1000)
    env.events.spawning_complete.add_listener(lambda **_kw: gc.freeze())


def lag_stats(lags: list[int], latencies: list[int]) -> dict[str, float]:
    lag_sorted, lat_sorted = sorted(lags), sorted(latencies)
    # Service time = latency - sender lag (reply - actual send), per message.
    service = sorted(lat - lag for lat, lag in zip(latencies, lags, strict=True))
    return {
        "messages": len(lags),
        "latency_min_ms": (lat_sorted[0] if lat_sorted else 0) / 1e6,
        "service_p50_ms": percentile(service, 0.50) / 1e6,
        "lag_p50_ms": percentile(lag_sorted, 0.50) / 1e6,
        "lag_p99_ms": percentile(lag_sorted, 0.99) / 1e6,
        "lag_max_ms": (lag_sorted[-1] if lag_sorted else 0) / 1e6,
        "latency_p50_ms": percentile(lat_sorted, 0.50) / 1e6,
        "latency_p99_ms": percentile(lat_sorted, 0.99) / 1e6,
    }


def run_paced(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Ramp paced streams through ``args.steps``; with several transports, the streams are
    shared among their users (Locust's equal weights) and each gets its own figures too."""
    if len(args.target) != len(args.transport):
        raise SystemExit("bench.driver: give one --target per transport")
    extra = ["--mode", "paced", "--frame-bytes", str(args.frame_bytes)]
    extra += ["--interval-ms", str(args.interval_ms)]
    classes = [ours_user(t) for t in args.transport]
    opts = locust_options(dict(zip(args.transport, args.target, strict=True)), extra)
    env = Environment(user_classes=classes, events=locust.events, parsed_options=opts)
    lags: dict[str, list[int]] = {t: [] for t in args.transport}
    latencies: dict[str, list[int]] = {t: [] for t in args.transport}
    errors = [0]
    window = [False]

    def on_batch(samples: list[Any], **_kw: Any) -> None:
        if not window[0]:
            return
        for sample in samples:
            if not sample.name.endswith("msg"):
                continue
            if sample.error is not None or sample.request_type not in lags:
                errors[0] += 1
                continue
            lags[sample.request_type].append(sample.lag_ns)
            latencies[sample.request_type].append(sample.latency_ns)

    spawned = Event()
    on_samples.add_listener(on_batch)
    env.events.spawning_complete.add_listener(lambda **_kw: spawned.set())
    if args.gc_tune:
        tune_gc(env)
    runner = make_runner(env, not args.no_plugins)
    out = []
    for streams in args.steps:
        spawned.clear()
        runner.start(streams, spawn_rate=args.spawn_rate)
        if not spawned.wait(args.seconds * 10 + 30):
            out.append({"streams": streams, "error": "spawning did not complete"})
            break
        gevent.sleep(args.settle_s)  # let the new streams' schedules interleave
        for t in args.transport:
            lags[t].clear()
            latencies[t].clear()
        errors[0] = 0
        window[0] = True
        w0, (u0, s0), q0 = time.perf_counter(), cpu_s(), runqueue_wait_s()
        gevent.sleep(args.seconds)
        window[0] = False
        w1, (u1, s1), q1 = time.perf_counter(), cpu_s(), runqueue_wait_s()
        every = [x for t in args.transport for x in lags[t]]
        every_lat = [x for t in args.transport for x in latencies[t]]
        step: dict[str, Any] = {"streams": streams, "failures": errors[0]}
        step.update(lag_stats(every, every_lat))
        step["cpu_util"] = ((u1 - u0) + (s1 - s0)) / (w1 - w0)
        step["runqueue_wait_ms_per_s"] = (q1 - q0) * 1e3 / (w1 - w0)
        step["cpu_us_per_msg"] = ((u1 - u0) + (s1 - s0)) * 1e6 / max(1, len(every))
        if args.emit_hist:  # for a parent merging several load processes
            step["lag_hdr"] = hdr.encode(hdr.from_ns(np.array(every, dtype=np.int64)))
            step["lat_hdr"] = hdr.encode(hdr.from_ns(np.array(every_lat, dtype=np.int64)))
        if len(args.transport) > 1:
            step["by_transport"] = {t: lag_stats(lags[t], latencies[t]) for t in args.transport}
        out.append(step)
        print(json.dumps(step), flush=True)
    return out


def tree_cpu_s() -> tuple[float, float]:
    """CPU seconds of this process, and of its children (our gRPC users' driver process)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    children = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            children += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return ru.ru_utime + ru.ru_stime, children


def run_overhead(args: argparse.Namespace) -> dict[str, Any]:
    """N paced streams of our user for one transport, results plugin on (as in a real run):
    the figures of every message intended inside the window, and the CPU of the process tree
    (the Locust process and, for gRPC, its driver process) during it."""
    extra = ["--mode", "paced", "--frame-bytes", str(args.frame_bytes)]
    extra += ["--interval-ms", str(args.interval_ms)]
    cls = ours_user(args.transport)
    opts = locust_options({args.transport: args.target}, extra)
    env = Environment(user_classes=[cls], events=locust.events, parsed_options=opts)
    lat: list[int] = []
    lags: list[int] = []
    failures = [0]
    bounds = [1 << 62, 1 << 62]

    def on_batch(samples: list[Any], **_kw: Any) -> None:
        for sample in samples:
            if sample.name.endswith("msg") and bounds[0] <= sample.intended_ns < bounds[1]:
                if sample.error is None:
                    lat.append(sample.latency_ns)
                    lags.append(sample.lag_ns)
                else:
                    failures[0] += 1

    spawned = Event()
    on_samples.add_listener(on_batch)
    env.events.spawning_complete.add_listener(lambda **_kw: spawned.set())
    runner = make_runner(env, not args.no_plugins)
    runner.start(args.streams, spawn_rate=args.spawn_rate)
    if not spawned.wait(60):
        return {"error": "spawning did not complete"}
    gevent.sleep(args.settle_s)
    t0 = now_ns()
    bounds[:] = [t0, t0 + int(args.seconds * 1e9)]
    (own0, kids0) = tree_cpu_s()
    gevent.sleep(args.seconds)
    (own1, kids1) = tree_cpu_s()
    gevent.sleep(args.tail_s)  # replies of the window's last messages
    out = summary(lat, lags, failures[0], (own1 - own0) + (kids1 - kids0))
    if lat:  # where the CPU went: the Locust process, and (gRPC) its driver process
        out["cpu_us_per_msg_locust"] = (own1 - own0) * 1e6 / len(lat)
        out["cpu_us_per_msg_driver"] = (kids1 - kids0) * 1e6 / len(lat)
    return out


def steps_arg(text: str) -> list[int]:
    try:
        steps = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers") from None
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError("steps must be positive integers")
    return steps


def transports_arg(text: str) -> list[str]:
    values = text.split(",")
    if not values or any(v not in TARGET_OPTION for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(TARGET_OPTION)}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.driver")
    sub = parser.add_subparsers(dest="what", required=True)
    pp = sub.add_parser("pingpong")
    pp.add_argument("--client", choices=["ours", "naive"], required=True)
    pp.add_argument("--conns", type=int, default=1)
    pp.add_argument("--warmup", type=int, default=500)
    pp.add_argument("--messages", type=int, default=10_000)
    pp.add_argument("--timeout-s", type=float, default=60.0)
    pp.add_argument("--profile", default="", help="write cProfile stats of the window here")
    ov = sub.add_parser("overhead")
    ov.add_argument("--transport", choices=list(TARGET_OPTION), required=True)
    ov.add_argument("--target", required=True)
    ov.add_argument("--streams", type=int, default=240)
    ov.add_argument("--seconds", type=float, default=15.0)
    ov.add_argument("--settle-s", type=float, default=1.0)
    ov.add_argument("--tail-s", type=float, default=2.0)
    ov.add_argument("--spawn-rate", type=float, default=500.0)
    ov.add_argument("--interval-ms", type=float, default=100.0)
    pa = sub.add_parser("paced")
    pa.add_argument("--steps", type=steps_arg, default=[100, 500, 1000])
    pa.add_argument("--seconds", type=float, default=3.0)
    pa.add_argument("--settle-s", type=float, default=1.0)
    pa.add_argument("--spawn-rate", type=float, default=500.0)
    pa.add_argument("--interval-ms", type=float, default=100.0)
    pa.add_argument("--gc-tune", action="store_true", help="gc.freeze() after spawning, rare gen-2")
    pa.add_argument("--emit-hist", action="store_true", help="add encoded lag/latency HDRs")
    pp.add_argument("--transport", choices=list(TARGET_OPTION), required=True)
    pp.add_argument("--target", required=True)
    pa.add_argument("--transport", type=transports_arg, required=True, help="e.g. tcp,ws,grpc")
    pa.add_argument("--target", action="append", required=True, help="one per transport")
    for p in (pp, pa, ov):
        p.add_argument(
            "--no-plugins", action="store_true", help="skip Locust's init event (no results plugin)"
        )
        p.add_argument("--frame-bytes", type=int, default=3200)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_nofile()
    options.defaults()  # our options module is imported, so Locust's parser carries them
    try:
        if args.what == "pingpong":
            print(json.dumps(run_pingpong(args)), flush=True)
        elif args.what == "overhead":
            print(json.dumps(run_overhead(args)), flush=True)
        else:
            run_paced(args)
    finally:
        shutil.rmtree(results_dir(), ignore_errors=True)
    sys.stdout.flush()
    # Exit without stopping the users: every figure is printed, and stopping hundreds of
    # streams gracefully would only lengthen the benchmark. The servers see connection resets.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
