"""Paced capacity: how many audio streams one load-generating process keeps on schedule.

One ``bench.driver paced`` child (one Locust ``LocalRunner``, i.e. one worker's worth of
process) runs our user in paced mode — 3200 B every 100 ms per stream — and ramps the stream
count through the steps. At each step, after spawning completes and the schedules settle, it
collects every message's sender lag (``Sample.lag_ns``: actual send − intended send, from the
``sample`` keyword of Locust's ``request`` event) for a fixed window. A step *holds* when lag
p99 stays under :data:`LAG_P99_LIMIT_MS` with no failures; the capacity is the largest step that
holds (target: 1,000 streams).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.harness import driver_argv, run_json_lines
from echoswarm import hdr

LAG_P99_LIMIT_MS = 2.0
TARGET_STREAMS = 1000  # per load process
TARGET_TWO_PROCESSES = 5000  # the 2-core machine, two load processes


def target_streams(plan: PacedPlan) -> int:
    return TARGET_TWO_PROCESSES if plan.processes == 2 else TARGET_STREAMS * plan.processes


@dataclass
class PacedPlan:
    transport: str = "tcp"
    steps: Sequence[int] = (250, 500, 1000, 1500)
    seconds: float = 4.0
    settle_s: float = 1.0
    spawn_rate: float = 500.0
    gc_tune: bool = False  # gc.freeze() once spawned + rare full collections (README)
    processes: int = 1  # load processes sharing each step's streams (as Locust's --processes)

    def timeout_s(self) -> float:
        spawn = sum(self.steps) / self.spawn_rate
        return spawn + len(self.steps) * (self.seconds + self.settle_s + 5) + 60


def measure(plan: PacedPlan, target: str) -> list[dict[str, Any]]:
    if plan.processes > 1:
        return _measure_processes(plan, target)
    return run_json_lines(_argv(plan, target, plan.steps), plan.timeout_s())


def _argv(plan: PacedPlan, target: str, steps: Sequence[int]) -> list[str]:
    argv = driver_argv(
        "paced",
        "--transport",
        plan.transport,
        "--target",
        target,
        "--steps",
        ",".join(str(s) for s in steps),
        "--seconds",
        str(plan.seconds),
        "--settle-s",
        str(plan.settle_s),
        "--spawn-rate",
        str(plan.spawn_rate),
    )
    if plan.gc_tune:
        argv.append("--gc-tune")
    return argv


def _measure_processes(plan: PacedPlan, target: str) -> list[dict[str, Any]]:
    """Each step's streams shared by ``plan.processes`` drivers running at once; the figures
    of a step merged over them (lag and latency percentiles from their merged histograms)."""
    n = plan.processes
    shares = [max(1, -(-s // n)) for s in plan.steps]
    argv = [*_argv(plan, target, shares), "--emit-hist"]
    with ThreadPoolExecutor(n) as pool:
        runs = list(pool.map(lambda _: run_json_lines(argv, plan.timeout_s()), range(n)))
    out = []
    for i, streams in enumerate(plan.steps):
        parts = [r[i] if i < len(r) else {"error": "no result"} for r in runs]
        bad = [p for p in parts if "error" in p]
        if bad:
            out.append({"streams": streams, "error": str(bad[0]["error"])})
            continue
        lag, lat = hdr.new_histogram(), hdr.new_histogram()
        for p in parts:
            lag.add(hdr.decode(p["lag_hdr"]))
            lat.add(hdr.decode(p["lat_hdr"]))
        msgs = sum(int(p["messages"]) for p in parts)
        lag_p, lat_p = hdr.percentiles_ms(lag, (50.0, 99.0)), hdr.percentiles_ms(lat, (50.0, 99.0))
        out.append(
            {
                "streams": shares[i] * n,
                "processes": n,
                "messages": msgs,
                "failures": sum(int(p["failures"]) for p in parts),
                "lag_p50_ms": lag_p[50.0],
                "lag_p99_ms": lag_p[99.0],
                "lag_max_ms": lag.get_max_value() / 1000.0,
                "latency_p50_ms": lat_p[50.0],
                "latency_p99_ms": lat_p[99.0],
                "cpu_util": sum(float(p["cpu_util"]) for p in parts),
                "cpu_us_per_msg": sum(
                    float(p["cpu_us_per_msg"]) * int(p["messages"]) for p in parts
                )
                / max(1, msgs),  # fmt: skip
                "runqueue_wait_ms_per_s": max(float(p["runqueue_wait_ms_per_s"]) for p in parts),
            }
        )
    return out


def holds(step: dict[str, Any]) -> bool:
    return (
        "error" not in step
        and step.get("messages", 0) > 0
        and step["failures"] == 0
        and step["lag_p99_ms"] < LAG_P99_LIMIT_MS
    )


def capacity(steps: list[dict[str, Any]]) -> int:
    """The largest stream count that held (0 if none did)."""
    return max((s["streams"] for s in steps if holds(s)), default=0)


def table(plan: PacedPlan, steps: list[dict[str, Any]]) -> str:
    head = (
        f"{'streams':>7} {'msgs':>7} {'expected':>8} {'lag p50 ms':>10} {'lag p99 ms':>10} "
        f"{'lag max ms':>10} {'lat p50 ms':>10} {'lat p99 ms':>10} {'CPU':>5} {'us/msg':>6} "
        f"{'rq wait':>7} "
        f"{'fail':>5}  holds"
    )
    gc_note = ", GC tuned (--gc-tune)" if plan.gc_tune else ""
    procs = f", streams shared by {plan.processes} load processes" if plan.processes > 1 else ""
    lines = [
        f"transport {plan.transport}, 3200 B every 100 ms per stream{gc_note}{procs}",
        head,
        "-" * len(head),
    ]
    for s in steps:
        if "error" in s:
            lines.append(f"{s.get('streams', '?'):>7} error: {s['error']}")
            continue
        expected = int(s["streams"] * plan.seconds * 10)
        lines.append(
            f"{s['streams']:>7} {s['messages']:>7} {expected:>8} {s['lag_p50_ms']:>10.3f} "
            f"{s['lag_p99_ms']:>10.3f} {s['lag_max_ms']:>10.3f} {s['latency_p50_ms']:>10.3f} "
            f"{s['latency_p99_ms']:>10.3f} {s['cpu_util']:>5.0%} "
            f"{s.get('cpu_us_per_msg', 0):>6.1f} "
            f"{s.get('runqueue_wait_ms_per_s', 0) / 1e3:>7.1%} {s['failures']:>5}  "
            f"{'yes' if holds(s) else 'NO'}"
        )
    lines.append(
        "CPU = process CPU time / wall time (us/msg: per echoed message); rq wait = share of "
        "the window the event loop's thread was runnable but waiting for a CPU (other load)"
    )
    cap = capacity(steps)
    target = target_streams(plan)
    verdict = "met" if cap >= target else "MISSED"
    lines.append(
        f"capacity: {cap} streams with lag p99 < {LAG_P99_LIMIT_MS:g} ms "
        f"(target {target}: {verdict})"
    )
    return "\n".join(lines)
