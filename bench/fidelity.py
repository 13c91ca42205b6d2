"""Measurement fidelity: do our users report the latency that is really there?

Two checks, both against real servers on loopback:

* **Known delay** — each echo server is started with ``--delay-ms 20`` and our users run a few
  paced streams against it. Every reply is held 20 ms by the server, so a latency below 20 ms
  would be a clock or matching bug (the check); the excess over 20 ms is what the sender's lag,
  timer rounding on both sides, the loopback and the machine's load add (reported, split into
  service time and sender lag).
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
        f"{'transport':<9} {'msgs':>5} {'lat min':>8} {'lat p50':>8} {'lat p99':>8} "
        f"{'svc p50':>8} {'lag p50':>8} {'lag p99':>8}  verdict"
    )
    lines = [
        f"server --delay-ms {DELAY_MS:g}; {STREAMS_PER_TRANSPORT} paced streams per transport "
        "(3200 B / 100 ms) in one process; ms; failures are the run's total",
        head,
        "-" * len(head),
    ]
    for transport, r in results.items():
        if "error" in r:
            lines.append(f"{transport:<9} error: {r['error']}")
            continue
        verdict = judge(r)
        lines.append(
            f"{transport:<9} {r['messages']:>5} {r['latency_min_ms']:>8.3f} "
            f"{r['latency_p50_ms']:>8.3f} {r['latency_p99_ms']:>8.3f} {r['service_p50_ms']:>8.3f} "
            f"{r['lag_p50_ms']:>8.3f} {r['lag_p99_ms']:>8.3f}  {verdict}"
        )
    lines.append(
        "lat = reply - intended send (what the rows report); svc = reply - actual send; "
        "lag = actual - intended send"
    )
    return "\n".join(lines)


def judge(r: dict[str, Any]) -> str:
    """ok: every message answered and none faster than the server's delay (a faster one would
    be a clock or matching bug); the excess over the delay is shown, not judged (it is the
    sender's lag plus timer rounding on both sides plus the machine's load)."""
    if r["messages"] == 0:
        return "NO SAMPLES"
    if r["failures"]:
        return f"{r['failures']} FAILED"
    if r["latency_min_ms"] < DELAY_MS:
        return f"BUG: a latency below {DELAY_MS:g} ms"
    return f"ok (+{r['latency_p50_ms'] - DELAY_MS:.2f} ms at p50)"


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
