"""``python -m bench overhead``: what our users add to every latency they report.

For each transport, our user (a real Locust ``LocalRunner`` with the results plugin, as in a
run; ``bench.driver overhead``) and a lean reference client (``bench.reference``: the
transport's own asyncio library, no Locust, no gevent) take turns against the same server —
``python -m servers KIND``, started once per transport — with the same streams and cadence
(3200 B every 100 ms per stream, starts spread over one interval). Rounds alternate ours and
the reference, so drift on a shared machine hits both alike; each figure is the median over
rounds. Latency is reply − intended send for both, nearest-rank percentiles over every message
intended inside the window.

The reference runs twice per round. ``reference`` waits on ``select()``, whose timeouts are in
microseconds, so its sends leave on time: that is the latency to compare with. ``ref-epoll``
is asyncio as shipped, whose epoll waits round up to whole milliseconds (its sends leave 0.3-0.6
ms late at the median, which would flatter us), but whose CPU is the lean figure (``select()``
walks every socket on every wake-up): that is the CPU to compare with.

Targets (issue "gRPC measured truthfully"), at 240 streams in one load process:
ours p50 ≤ reference p50 + 0.3 ms, ours p99 ≤ 1.5 × reference p99, and for gRPC our CPU per
message (the Locust process plus its gRPC driver process) ≤ ref-epoll's.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import driver_argv, run_json
from echoswarm.orchestrate import instrument

TRANSPORTS = ("grpc", "ws", "tcp")
# ours; the reference with on-time (select) timers, for latency; asyncio's default, for CPU
CLIENTS = ("ours", "reference", "ref-epoll")
P50_SLACK_MS = 0.3
P99_RATIO = 1.5


@dataclass
class OverheadPlan:
    transports: Sequence[str] = TRANSPORTS
    streams: int = 240
    seconds: float = 15.0
    rounds: int = 2
    settle_s: float = 1.0
    tail_s: float = 2.0  # after the window: replies of its last messages

    def timeout_s(self) -> float:
        return self.settle_s + self.seconds + self.tail_s + 60 + self.streams / 100


def common_args(transport: str, target: str, plan: OverheadPlan) -> list[str]:
    """The options every client of a round takes (ours, the references, the gRPC designs)."""
    common = ["--transport", transport, "--target", target, "--streams", str(plan.streams)]
    common += ["--seconds", str(plan.seconds), "--settle-s", str(plan.settle_s)]
    return common + ["--tail-s", str(plan.tail_s)]


def client_argv(client: str, transport: str, target: str, plan: OverheadPlan) -> list[str]:
    """``ours`` (a real LocalRunner), ``reference`` (on-time timers) or ``ref-epoll``."""
    common = common_args(transport, target, plan)
    if client == "ours":
        return driver_argv("overhead", *common)
    timers = "epoll" if client == "ref-epoll" else "select"
    return [sys.executable, "-m", "bench.reference", *common, "--timers", timers]


def measure(
    plan: OverheadPlan,
    targets: dict[str, str],
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{transport: {client: [round...]}} for each of CLIENTS, the order turning per round."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for transport in plan.transports:
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CLIENTS}
        for r in range(plan.rounds):
            k = r % len(CLIENTS)
            for client in CLIENTS[k:] + CLIENTS[:k]:
                progress(f"overhead: {transport} {client}, round {r + 1}/{plan.rounds}")
                argv = client_argv(client, transport, targets[transport], plan)
                runs[client].append(run_json(argv, plan.timeout_s()))
        out[transport] = runs
    return out


def _median(runs: list[dict[str, Any]], key: str) -> float:
    values = [float(r[key]) for r in runs if key in r and "error" not in r]
    return statistics.median(values) if values else float("nan")


def verdicts(runs: dict[str, list[dict[str, Any]]], transport: str) -> dict[str, Any]:
    ours, ref, lean = runs["ours"], runs["reference"], runs.get("ref-epoll", [])
    o50, r50 = _median(ours, "p50_ms"), _median(ref, "p50_ms")
    o99, r99 = _median(ours, "p99_ms"), _median(ref, "p99_ms")
    ocpu, rcpu = _median(ours, "cpu_us_per_msg"), _median(lean or ref, "cpu_us_per_msg")
    row: dict[str, Any] = {
        "transport": transport,
        "ours_p50_ms": o50,
        "ref_p50_ms": r50,
        "ours_p99_ms": o99,
        "ref_p99_ms": r99,
        "ours_lag_p50_ms": _median(ours, "lag_p50_ms"),
        "ours_lag_p99_ms": _median(ours, "lag_p99_ms"),
        "ours_cpu_us": ocpu,
        "ref_cpu_us": rcpu,
        "failures": sum(int(r.get("failures", 0)) for r in ours + ref + lean),
        "p50_ok": o50 <= r50 + P50_SLACK_MS,
        "p99_ok": o99 <= P99_RATIO * r99,
        "cpu_ok": ocpu <= rcpu if transport == "grpc" else None,
        "errors": [r["error"] for r in ours + ref + lean if "error" in r],
    }
    return row


def table(plan: OverheadPlan, results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    head = (
        f"{'transport':9} {'client':10} {'p50 ms':>8} {'p99 ms':>8} {'lag p50':>8} "
        f"{'lag p99':>8} {'CPU us/msg':>10} {'msgs':>7} {'fail':>5}"
    )
    lines = [head, "-" * len(head)]
    summary = []
    for transport, runs in results.items():
        for client in CLIENTS:
            rs = runs.get(client, [])
            msgs = int(_median(rs, "messages")) if rs else 0
            lines.append(
                f"{transport:9} {client:10} {_median(rs, 'p50_ms'):8.2f} "
                f"{_median(rs, 'p99_ms'):8.2f} {_median(rs, 'lag_p50_ms'):8.3f} "
                f"{_median(rs, 'lag_p99_ms'):8.3f} {_median(rs, 'cpu_us_per_msg'):10.1f} "
                f"{msgs:7d} {sum(int(r.get('failures', 0)) for r in rs):5d}"
            )
        v = verdicts(runs, transport)
        cpu = "" if v["cpu_ok"] is None else f"; CPU/msg {_ok(v['cpu_ok'])} (target <= ref-epoll's)"
        summary.append(
            f"{transport:9} p50 {v['ours_p50_ms'] - v['ref_p50_ms']:+.2f} ms "
            f"{_ok(v['p50_ok'])} (target <= +{P50_SLACK_MS} ms); "
            f"p99 x{v['ours_p99_ms'] / v['ref_p99_ms']:.2f} {_ok(v['p99_ok'])} "
            f"(target <= x{P99_RATIO}){cpu}"
        )
        for e in v["errors"]:
            summary.append(f"{'':9} error: {e}")
    lines.append("")
    lines.append(
        f"ours - reference, {plan.streams} streams, {plan.seconds:g} s windows, "
        f"median of {plan.rounds} alternating rounds:"
    )
    return "\n".join(lines + summary)


def save(
    plan: OverheadPlan,
    results: dict[str, dict[str, list[dict[str, Any]]]],
    path: Path = instrument.SAVED,
) -> Path:
    """The figures as JSON (``build/bench-results/overhead.json``): ``python -m echoswarm demo``
    puts them in its run.json, so the report states the instrument's own overhead."""
    per_transport: dict[str, Any] = {}
    data: dict[str, Any] = {
        "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "streams": plan.streams,
        "seconds": plan.seconds,
        "rounds": plan.rounds,
        "transports": per_transport,
    }
    for transport, runs in results.items():
        v = verdicts(runs, transport)
        per_transport[transport] = {
            "p50_ms": v["ours_p50_ms"] - v["ref_p50_ms"],
            "p99_ms": v["ours_p99_ms"] - v["ref_p99_ms"],
            "ours_p50_ms": v["ours_p50_ms"],
            "ours_p99_ms": v["ours_p99_ms"],
            "reference_p50_ms": v["ref_p50_ms"],
            "reference_p99_ms": v["ref_p99_ms"],
            "ours_cpu_us_per_msg": v["ours_cpu_us"],
            "ref_epoll_cpu_us_per_msg": v["ref_cpu_us"],
            "source": data["command"],
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def _ok(flag: bool) -> str:
    return "met" if flag else "MISSED"
