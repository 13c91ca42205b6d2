"""``python -m bench`` — the load-generator benchmarks (not tests): overhead, cost, paced
capacity, fidelity.

    python -m bench [all|overhead|cost|paced|fidelity|profile|wan|grpc-designs] [--quick] [options]

* ``overhead`` — our users beside a lean reference client per transport (plain ``grpc.aio``,
  asyncio TCP, the ``websockets`` client), same server, streams and cadence, alternating:
  p50/p99, the difference, CPU per message (``bench.overhead``; ``--streams 240 --seconds 15``);
* ``artillery`` — our WebSocket user beside Artillery 2.0.34's ws engine at 80 connections,
  CPU per message (``bench.artillery``; installs Artillery with npm into ``build/``; not part
  of ``all``);
* ``cost`` — CPU time of the load-generating process per echoed message (ping-pong, 3200 B,
  1 and 100 connections) for our TCP, WebSocket and gRPC-bidi users, beside a C client compiled
  here with gcc and the naive Locust patterns, against the same servers in the same run
  (``bench.cost``);
* ``paced`` — how many paced audio streams one process holds with sender lag p99 < 2 ms
  (``bench.paced_capacity``);
* ``fidelity`` — latency against a server with a known 20 ms delay, and ping-pong RTT beside C
  (``bench.fidelity``);
* ``profile`` — where the time goes in our users (py-spy; ``bench.profile``);
* ``grpc-designs`` — where a gRPC user's calls could run (grpcio's gevent mode, grpc.aio on a
  thread beside the gevent side, the driver process we use, a lean client), side by side
  (``bench.grpc_designs``; not part of ``all``);
* ``wan`` — the WAN emulator's own added latency and CPU per message at the demo's load, and
  how precisely each way of waiting wakes up (``bench.wan``; not part of ``all``).

``all`` (the default) runs overhead, cost, paced and fidelity: about 6 minutes; ``--quick``
about 40 s.
Servers are ``python -m servers KIND --port 0`` subprocesses, stopped on exit. Every
measurement is a child process of its own; see ``bench/README.md`` for the method and results.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from bench import artillery, cost, fidelity, grpc_designs, overhead, paced_capacity, profile, wan
from bench.harness import BenchError, build_c_client, last_cpu, servers
from echoswarm.argtypes import positive_float, positive_int

WHATS = (
    "all", "overhead", "cost", "artillery", "paced", "fidelity", "profile", "wan", "grpc-designs",
)  # fmt: skip


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"python -m bench: error: {message}\n")
        raise SystemExit(2)


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be a positive integer")
    return values


def transport_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    bad = [v for v in values if v not in cost.TRANSPORTS]
    if bad or not values:
        raise argparse.ArgumentTypeError(
            f"{text!r}: choose from {', '.join(cost.TRANSPORTS)} (comma-separated)"
        )
    return values


def build_parser() -> Parser:
    p = Parser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("what", nargs="?", choices=WHATS, default="all")
    p.add_argument("--quick", action="store_true", help="small counts, one repeat (~20 s)")
    p.add_argument("--transports", type=transport_list, default=list(cost.TRANSPORTS))
    p.add_argument("--conns", type=int_list, default=None, help="connection counts (1,100)")
    p.add_argument(
        "--messages", type=positive_int, default=None, help="messages per Python cost run"
    )
    p.add_argument(
        "--repeat", type=positive_int, default=None, help="cost repeats / wan rounds (3)"
    )
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="cost: let the scheduler place clients and servers (default: all on one CPU)",
    )
    p.add_argument("--paced-transport", choices=cost.TRANSPORTS, default="tcp")
    p.add_argument("--paced-steps", type=int_list, default=None, help="stream counts to ramp")
    p.add_argument("--paced-seconds", type=positive_float, default=None)
    p.add_argument(
        "--paced-processes",
        type=positive_int,
        default=1,
        help="paced: load processes sharing each step's streams (5000 streams: 2)",
    )
    p.add_argument(
        "--gc-tune",
        action="store_true",
        help="paced: gc.freeze() after spawning and rare full collections (the GC experiment)",
    )
    p.add_argument("--fidelity-seconds", type=positive_float, default=None)
    p.add_argument(
        "--streams", type=positive_int, default=240, help="overhead: paced streams per client"
    )
    p.add_argument(
        "--seconds", type=positive_float, default=None, help="overhead: measuring window (15 s)"
    )
    p.add_argument("--rounds", type=positive_int, default=2, help="overhead: alternating rounds")
    p.add_argument("--wan-seconds", type=positive_float, default=None, help="wan: window (6)")
    p.add_argument("--wan-streams", type=positive_int, default=None, help="wan: streams (240)")
    return p


def plans(
    args: argparse.Namespace,
) -> tuple[cost.CostPlan, paced_capacity.PacedPlan, float]:
    cp = cost.CostPlan(transports=args.transports, cpu=None if args.no_pin else last_cpu())
    pp = paced_capacity.PacedPlan(transport=args.paced_transport)
    fid_s = 3.0
    if args.quick:
        cp.messages = {"tcp": 2000, "ws": 1000, "grpc": 500}
        cp.warmup = 200
        cp.repeat = 1
        cp.clients = ("c", "ours", "naive")
        pp.steps, pp.seconds, pp.settle_s = (50, 200), 1.5, 0.5
        fid_s = 1.5
    if args.conns:
        cp.conns = args.conns
    if args.messages:
        cp.messages = {t: args.messages for t in cost.TRANSPORTS}
        cp.warmup = min(cp.warmup, max(50, args.messages // 5))
    if args.repeat:
        cp.repeat = args.repeat
    if args.paced_steps:
        pp.steps = args.paced_steps
    if args.paced_seconds:
        pp.seconds = args.paced_seconds
    pp.gc_tune = args.gc_tune
    pp.processes = args.paced_processes
    if args.fidelity_seconds:
        fid_s = args.fidelity_seconds
    return cp, pp, fid_s


def say(text: str) -> None:
    print(text, flush=True)


def note(text: str) -> None:
    sys.stderr.write(f"  .. {text}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    cp, pp, fid_s = plans(args)
    what = args.what
    t0 = time.monotonic()
    if what == "wan":
        plan = wan.WanPlan()
        if args.quick:
            plan.quick()
        plan.seconds = args.wan_seconds or plan.seconds
        plan.streams = args.wan_streams or plan.streams
        plan.repeat = args.repeat or plan.repeat
        wan.run(plan, say, note)
    if what == "profile":
        with servers(args.transports) as targets:
            for transport in args.transports:
                messages = args.messages or {"tcp": 60_000, "ws": 30_000, "grpc": 8_000}[transport]
                conns = (args.conns or [1])[0]
                say(f"\n== profile: {transport}, {conns} connection(s), {messages} messages ==")
                say(profile.profile_transport(transport, targets[transport], conns, messages))
        return 0
    if what in ("all", "overhead"):
        op = overhead.OverheadPlan(
            transports=args.transports,
            streams=args.streams,
            seconds=args.seconds or (3.0 if args.quick else 15.0),
            rounds=1 if args.quick else args.rounds,
        )
        if args.quick:
            op.settle_s, op.tail_s = 0.3, 0.5
        with servers(op.transports) as targets:
            found = overhead.measure(op, targets, progress=note)
        say(
            f"\n== overhead: our users vs a lean reference client, {op.streams} paced streams "
            "of 3200 B every 100 ms, one load process, same server =="
        )
        say(overhead.table(op, found))
        if args.quick:  # a smoke run's figures must not stand in for a measurement
            say("(--quick: figures not saved)")
        else:
            say(f"(saved to {overhead.save(op, found)}; `python -m echoswarm demo` reports them)")
    if what == "grpc-designs":  # (not in "all": the design choice, ~4 minutes)
        gp = grpc_designs.DesignsPlan(
            streams=args.streams, seconds=args.seconds or (3.0 if args.quick else 10.0)
        )
        gp.rounds = 1 if args.quick else args.rounds
        if args.quick:
            gp.settle_s, gp.tail_s = 0.3, 0.5
        with servers(["grpc"]) as targets:
            found_designs = grpc_designs.measure(gp, targets["grpc"], progress=note)
        say(
            f"\n== grpc-designs: where a gRPC user's calls run, {gp.streams} paced bidi streams "
            "of 3200 B every 100 ms, same server =="
        )
        say(grpc_designs.table(gp, found_designs))
    if what == "artillery":  # (not in "all": it installs Artillery with npm, ~460 MB)
        ap = artillery.ArtilleryPlan()
        if args.quick:
            ap.short_loop, ap.long_loop, ap.our_messages = 20, 100, 4000
        with servers(["ws"]) as targets:
            note("artillery: ours vs Artillery's ws engine, 80 connections")
            found_art = artillery.measure(ap, targets["ws"])
        say("\n== CPU per WebSocket message vs Artillery ==")
        say(artillery.table(found_art))
    cost_results: dict[cost.Key, list[dict]] = {}
    if what in ("all", "cost", "fidelity"):
        binary, why = build_c_client()
        if binary is None:
            note(f"C client unavailable ({why}); C rows will read n/a")
        with servers(cp.server_kinds(), cpu=cp.cpu) as targets:
            cost_results = cost.measure(cp, targets, binary, progress=note)
        if what != "fidelity":
            where = f"all on CPU {cp.cpu}" if cp.cpu is not None else "unpinned"
            say(
                f"\n== load-generator cost: CPU per echoed message (ping-pong, "
                f"{cp.frame_bytes} B, median of {cp.repeat}, clients and servers {where}) =="
            )
            say(cost.table(cp, cost_results))
    if what in ("all", "paced"):
        with servers([pp.transport]) as targets:
            note(f"paced capacity: {pp.transport}, steps {','.join(map(str, pp.steps))}")
            steps = paced_capacity.measure(pp, targets[pp.transport])
        say("\n== paced capacity: one process, sender lag per stream count ==")
        say(paced_capacity.table(pp, steps))
    if what in ("all", "fidelity"):
        delay = ["--delay-ms", f"{fidelity.DELAY_MS:g}"]
        kinds = args.transports
        with servers(kinds, {k: delay for k in kinds}) as targets:
            note("fidelity: paced streams against --delay-ms 20 servers")
            delayed = fidelity.measure_delay(kinds, targets, fid_s)
        say("\n== fidelity: a known 20 ms server delay ==")
        say(fidelity.delay_table(delayed))
        say("\n== fidelity: ping-pong RTT as each client measures it ==")
        say(fidelity.rtt_table(args.transports, cost_results))
    say(
        f"\n(bench took {time.monotonic() - t0:.0f} s; command: python -m bench "
        f"{' '.join(sys.argv[1:])})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        sys.stderr.write(f"python -m bench: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("python -m bench: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
