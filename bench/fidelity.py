"""Measurement fidelity: do our users report the latency that is really there?

Two checks, both against real servers on loopback:

* **Known delay** — each echo server is started with ``--delay-ms 20`` and our user runs a few
  paced streams against it. Every reply is held 20 ms by the server, so latency below 20 ms
  would be a clock or matching bug, and the excess over 20 ms is what the client, the loopback
  and the server's own scheduling add. Pass: p50 in [20, 21) ms and p99 below 25 ms.
* **Ping-pong RTT beside C** — from the cost runs at one connection: the round trip p50/p99 our
  user reports versus what the C client measures against the same server. The difference is
  the Python client's share of every latency it reports (its per-message work sits inside the
  timed interval) — small, but it is the resolution limit of the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.cost import CLIENT_LABEL, Key, summarize
from bench.harness import driver_argv, run_json_lines

DELAY_MS = 20.0
STREAMS_PER_TRANSPORT = 10


def measure_delay(
    transports: Sequence[str], targets: dict[str, str], seconds: float
) -> dict[str, dict[str, Any]]:
    """Paced streams against servers started with ``--delay-ms 20``, every transport's users
    in one Locust process (as in seed S000); one result per transport."""
    argv = driver_argv(
        "paced",
        "--transport",
        ",".join(transports),
        "--steps",
        str(STREAMS_PER_TRANSPORT * len(transports)),
        "--seconds",
        str(seconds),
        "--settle-s",
        "0.5",
    )
    for transport in transports:
        argv += ["--target", targets[transport]]
    step = run_json_lines(argv, seconds + 60)[-1]
    if "error" in step:
        return {t: step for t in transports}
    by = step.get("by_transport") or {transports[0]: step}
    return {t: dict(by[t], failures=step["failures"]) for t in transports}


def delay_table(results: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'transport':<9} {'msgs':>6} {'lat p50 ms':>10} {'lat p99 ms':>10} "
        f"{'excess p50':>10} {'lag p99 ms':>10}  verdict"
    )
    lines = [
        f"server --delay-ms {DELAY_MS:g}; {STREAMS_PER_TRANSPORT} paced streams per transport "
        "(3200 B / 100 ms) in one process; failures are the run's total",
        head,
        "-" * len(head),
    ]
    for transport, r in results.items():
        if "error" in r:
            lines.append(f"{transport:<9} error: {r['error']}")
            continue
        p50, p99 = r["latency_p50_ms"], r["latency_p99_ms"]
        ok = DELAY_MS <= p50 < DELAY_MS + 1 and p99 < DELAY_MS + 5 and r["failures"] == 0
        lines.append(
            f"{transport:<9} {r['messages']:>6} {p50:>10.3f} {p99:>10.3f} "
            f"{p50 - DELAY_MS:>10.3f} {r['lag_p99_ms']:>10.3f}  {'ok' if ok else 'CHECK'}"
        )
    return "\n".join(lines)


def rtt_table(transports: Sequence[str], cost_results: dict[Key, list[dict[str, Any]]]) -> str:
    head = (
        f"{'transport':<9} {'client':<26} {'RTT p50 us':>10} {'RTT p99 us':>10} {'+p50 vs C':>10}"
    )
    lines = ["ping-pong, 1 connection, 3200 B (from the cost runs)", head, "-" * len(head)]
    for transport in transports:
        ref = summarize(cost_results.get((transport, 1, "c"), []))
        for client in ("c", "ours", "bare", "naive"):
            cell = summarize(cost_results.get((transport, 1, client), []))
            if not cell.ok_runs:
                continue
            extra = cell.p50_us - ref.p50_us if ref.ok_runs and client != "c" else float("nan")
            shown = "" if extra != extra else f"{extra:>10.1f}"
            lines.append(
                f"{transport:<9} {CLIENT_LABEL[(client, transport)]:<26} {cell.p50_us:>10.1f} "
                f"{cell.p99_us:>10.1f} {shown}".rstrip()
            )
    return "\n".join(lines)
