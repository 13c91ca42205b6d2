"""``python -m bench grpc-designs``: the ways a gRPC user could run inside a Locust load
process, measured side by side (issue "gRPC measured truthfully"; docs/ARCHITECTURE.md §5).

The same server (``python -m servers grpc``), streams and cadence as ``bench overhead``
(240 bidi streams of 3200 B every 100 ms, starts spread over one interval, latency = reply −
intended send, nearest rank over every message intended inside the window), one child
process per design and round:

* ``gevent-mode`` — what the first landing did: a gevent-patched process, grpcio's gevent
  integration (``grpc.experimental.gevent.init_gevent``), the sync API, one greenlet per
  stream feeding a request iterator paced with ``gevent.sleep``. No Locust: the cost shown is
  grpcio's gevent mode alone.
* ``thread`` — ``grpc.aio`` on a native thread beside a Python main thread that stands in for
  the gevent side of a Locust process: it computes ``--busy-pct`` of the time in 2 ms slices
  (0: idle; 25: a process also driving TCP/WS users and the results plugin). The process is
  *not* gevent-patched — inside a patched one grpc.aio's poller thread becomes a greenlet and
  the calls never finish (the issue's probe), so this is the best this design could do once
  that is worked around. Its CPU figure includes the stand-in's work and is not compared.
* ``driver`` — the design chosen: our ``GrpcUser`` in a real Locust ``LocalRunner`` with the
  results plugin, its calls in the gRPC driver process (``bench.driver overhead``).
* ``reference`` — the lean ``grpc.aio`` client of ``bench overhead`` (``bench.reference``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.overhead import OverheadPlan, client_argv, common_args

MS = 1_000_000
DESIGNS = ("gevent-mode", "thread", "thread-busy", "driver", "reference")


@dataclass
class DesignsPlan(OverheadPlan):
    """``bench overhead``'s load (streams, window, rounds), for the gRPC designs."""

    designs: Sequence[str] = DESIGNS
    seconds: float = 10.0
    busy_pct: int = 25


def design_argv(design: str, plan: DesignsPlan, target: str) -> list[str]:
    if design == "driver":
        return client_argv("ours", "grpc", target, plan)
    if design == "reference":
        return client_argv("reference", "grpc", target, plan)
    busy = str(plan.busy_pct if design == "thread-busy" else 0)
    kind = "thread" if design.startswith("thread") else design
    common = common_args("grpc", target, plan)
    return [sys.executable, "-m", "bench.grpc_designs", kind, *common, "--busy-pct", busy]


def measure(
    plan: DesignsPlan, target: str, progress: Callable[[str], None] = lambda _: None
) -> dict[str, list[dict[str, Any]]]:
    """{design: [round...]}, the order turning from round to round."""
    from bench.harness import run_json

    runs: dict[str, list[dict[str, Any]]] = {d: [] for d in plan.designs}
    order = list(plan.designs)
    for r in range(plan.rounds):
        k = r % len(order)
        for design in order[k:] + order[:k]:
            progress(f"grpc-designs: {design}, round {r + 1}/{plan.rounds}")
            runs[design].append(run_json(design_argv(design, plan, target), plan.timeout_s()))
    return runs


def table(plan: DesignsPlan, runs: dict[str, list[dict[str, Any]]]) -> str:
    from bench.harness import median

    def med(rs: list[dict[str, Any]], key: str) -> float:
        return median([float(r[key]) for r in rs if key in r and "error" not in r])

    head = (
        f"{'design':12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'lag p99':>8} "
        f"{'CPU us/msg':>10} {'msgs':>7} {'fail':>5}"
    )
    lines = [head, "-" * len(head)]
    for design, rs in runs.items():
        cpu = med(rs, "cpu_us_per_msg")
        cpu_text = "(n/a)" if design.startswith("thread") else f"{cpu:.1f}"
        lines.append(
            f"{design:12} {med(rs, 'p50_ms'):8.2f} {med(rs, 'p99_ms'):8.2f} "
            f"{med(rs, 'max_ms'):8.1f} {med(rs, 'lag_p99_ms'):8.3f} {cpu_text:>10} "
            f"{int(med(rs, 'messages') or 0):7d} {sum(int(r.get('failures', 0)) for r in rs):5d}"
        )
        for r in rs:
            if "error" in r:
                lines.append(f"{'':12} error: {r['error']}")
    lines.append(
        f"({plan.streams} streams, {plan.seconds:g} s windows, median of {plan.rounds} rounds; "
        f"thread-busy: the main thread computes {plan.busy_pct}% of the time in 2 ms slices)"
    )
    return "\n".join(lines)


# -- the designs that are not elsewhere (child processes) -------------------------------------
def _gevent_mode(args: argparse.Namespace) -> dict[str, Any]:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    import grpc
    from grpc.experimental import gevent as grpc_gevent

    grpc_gevent.init_gevent()
    from bench.reference import Window
    from bench.stats import summary
    from echoswarm.measure import now_ns
    from protos import echo_pb2, echo_pb2_grpc

    win = Window()
    interval = int(args.interval_ms * MS)
    payload = bytes(args.frame_bytes - 32)
    start = now_ns() + 500 * MS
    end = start + int((args.settle_s + args.seconds + args.tail_s) * 1e9)

    def sleep_until(due: int) -> None:
        delay = due - now_ns()
        if delay > 0:
            gevent.sleep(delay / 1e9)

    def stream(t0: int) -> None:
        channel = grpc.insecure_channel(
            args.target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        grpc.channel_ready_future(channel).result(timeout=10)

        def frames() -> Any:
            seq = 0
            while (due := t0 + seq * interval) < end:
                sleep_until(due)
                yield echo_pb2.Frame(
                    seq=seq, intended_send_ns=due, sent_ns=now_ns(), payload=payload
                )
                seq += 1

        try:
            for reply in echo_pb2_grpc.EchoStub(channel).Bidi(frames()):
                win.reply(reply.intended_send_ns, reply.sent_ns, now_ns(), reply.payload == payload)
        finally:
            channel.close()

    greenlets = [
        gevent.spawn(stream, start + i * interval // args.streams) for i in range(args.streams)
    ]
    win.start_ns = start + int(args.settle_s * 1e9)
    win.end_ns = win.start_ns + int(args.seconds * 1e9)
    sleep_until(win.start_ns)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    sleep_until(win.end_ns)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    gevent.joinall(greenlets, timeout=args.tail_s + 5)
    failed = [g for g in greenlets if g.dead and g.exception is not None]
    gevent.killall(greenlets, timeout=5)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out = summary(win.latencies, win.lags, win.failures, cpu)
    if failed:
        out["error"] = f"{len(failed)} streams failed: {failed[0].exception!r}"[:200]
    return out


def _thread(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio
    import selectors
    import threading

    from bench import reference

    found: dict[str, Any] = {}

    def run() -> None:
        loop = lambda: asyncio.SelectorEventLoop(selectors.SelectSelector())  # noqa: E731
        with asyncio.Runner(loop_factory=loop) as runner:
            found.update(runner.run(reference.main_async(args)))

    t = threading.Thread(target=run, name="grpc-aio")
    t.start()
    slice_s = 0.002
    idle_s = slice_s * (100 - args.busy_pct) / args.busy_pct if args.busy_pct else 0.05
    while t.is_alive():  # the stand-in for the gevent side: pure-Python work, then a rest
        if args.busy_pct:
            until = time.perf_counter() + slice_s
            n = 0
            while time.perf_counter() < until:
                n += sum(range(200))
        t.join(idle_s)
    return found


def main(argv: list[str] | None = None) -> int:
    from bench.reference import build_parser

    p = build_parser()
    p.prog = "python -m bench.grpc_designs"
    p.add_argument("design", choices=("gevent-mode", "thread"))
    p.add_argument("--busy-pct", type=int, default=0)
    args = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    run = _gevent_mode if args.design == "gevent-mode" else _thread
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
