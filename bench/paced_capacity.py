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
from dataclasses import dataclass
from typing import Any

from bench.harness import driver_argv, run_json_lines

LAG_P99_LIMIT_MS = 2.0
TARGET_STREAMS = 1000


@dataclass
class PacedPlan:
    transport: str = "tcp"
    steps: Sequence[int] = (250, 500, 1000, 1500)
    seconds: float = 4.0
    settle_s: float = 1.0
    spawn_rate: float = 500.0
    gc_tune: bool = False  # gc.freeze() once spawned + rare full collections (README)

    def timeout_s(self) -> float:
        spawn = sum(self.steps) / self.spawn_rate
        return spawn + len(self.steps) * (self.seconds + self.settle_s + 5) + 60


def measure(plan: PacedPlan, target: str) -> list[dict[str, Any]]:
    argv = driver_argv(
        "paced",
        "--transport",
        plan.transport,
        "--target",
        target,
        "--steps",
        ",".join(str(s) for s in plan.steps),
        "--seconds",
        str(plan.seconds),
        "--settle-s",
        str(plan.settle_s),
        "--spawn-rate",
        str(plan.spawn_rate),
    )
    if plan.gc_tune:
        argv.append("--gc-tune")
    return run_json_lines(argv, plan.timeout_s())


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
    lines = [
        f"transport {plan.transport}, 3200 B every 100 ms per stream{gc_note}",
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
    verdict = "met" if cap >= TARGET_STREAMS else "MISSED"
    lines.append(
        f"capacity: {cap} streams with lag p99 < {LAG_P99_LIMIT_MS:g} ms "
        f"(target {TARGET_STREAMS}: {verdict})"
    )
    return "\n".join(lines)
