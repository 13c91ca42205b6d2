"""Load-generator cost: CPU time of the load-generating process per echoed message.

For each transport and connection count, against the same echo server in the same run:

* **C** — ``bench/pingpong.c`` (raw TCP, or WebSocket with RFC 6455 masking after a hand-rolled
  handshake). gRPC has no C client without a gRPC library, so its reference is the C raw-TCP
  figure at the same connection count: the floor any transport of these frames sits on.
* **ours** — the echoswarm user (``TcpUser``, ``WebSocketUser``, ``GrpcUser`` bidi) in ping-pong
  mode inside a real Locust ``Environment`` + ``LocalRunner`` (``bench.driver``).
* **bare** — the same user with Locust's ``init`` event not fired, so our results plugin
  (``echoswarm.plugins.collector``: HDR histograms, event records, the results directory) is not
  attached: the difference is what the plugin costs per message.
* **naive** — the pattern Locust's documentation leads to (``bench.naive``), same runner.

Each cell is CPU seconds (user + system, every thread) over a fixed message count after a
warm-up, divided by that count; runs are repeated round-robin (so slow drift on a shared machine
hits every client alike) and the median is reported with the spread. Ratios are medians over
the C median of the same transport and connection count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.harness import driver_argv, median, run_json

TRANSPORTS = ("tcp", "ws", "grpc")
TARGET_RATIO = {"tcp": 1.5, "ws": 2.5, "grpc": 8.0}
# What the issue quotes for the naive patterns (measured elsewhere), shown for comparison.
QUOTED_NAIVE_RATIO = {"tcp": 2.1, "ws": 4.5, "grpc": 17.0}
CLIENT_LABEL = {
    ("c", "tcp"): "C pingpong (raw TCP)",
    ("c", "ws"): "C pingpong (RFC 6455)",
    ("c", "grpc"): "C raw-TCP floor (*)",
    ("ours", "tcp"): "echoswarm TcpUser",
    ("ours", "ws"): "echoswarm WebSocketUser",
    ("ours", "grpc"): "echoswarm GrpcUser bidi",
    ("bare", "tcp"): "  same, no results plugin",
    ("bare", "ws"): "  same, no results plugin",
    ("bare", "grpc"): "  same, no results plugin",
    ("naive", "tcp"): "naive socket",
    ("naive", "ws"): "naive websocket-client",
    ("naive", "grpc"): "naive stub+queue iterator",
}


@dataclass
class CostPlan:
    transports: Sequence[str] = TRANSPORTS
    conns: Sequence[int] = (1, 100)
    messages: dict[str, int] = field(
        default_factory=lambda: {"tcp": 20_000, "ws": 10_000, "grpc": 4_000}
    )
    warmup: int = 1_000
    repeat: int = 3
    clients: Sequence[str] = ("c", "ours", "bare", "naive")
    # Clients and servers share this CPU (None: the scheduler places them). On this VM a
    # ping-pong across two vCPUs costs a ~60 us wake-up per message, charged as system time to
    # whichever side sleeps, and the scheduler sometimes co-locates the pair and sometimes not:
    # one-connection figures jumped 3.6 -> 28 us (C) between repeats. On one CPU every message
    # is two direct context switches and only the client's own work is left.
    cpu: int | None = None
    frame_bytes: int = 3200
    timeout_s: float = 90.0

    def server_kinds(self) -> list[str]:
        """Servers to start: gRPC's reference is the C client on the TCP server."""
        kinds = list(self.transports)
        if "grpc" in kinds and "tcp" not in kinds:
            kinds.insert(0, "tcp")
        return kinds


Key = tuple[str, int, str]  # (transport, conns, client)


def c_argv(binary: Path, transport: str, target: str, conns: int, plan: CostPlan) -> list[str]:
    if transport == "ws":
        parts = urlsplit(target)
        host, port = parts.hostname or "127.0.0.1", str(parts.port)
    else:
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
    # The C client is ~10x cheaper per message: give it more messages for a readable CPU time.
    messages = plan.messages.get(transport, 10_000) * 2
    warmup = max(plan.warmup, 10 * conns)
    return [str(binary), transport, host, port, str(conns), str(warmup), str(messages)] + [
        str(plan.frame_bytes)
    ]


def python_argv(client: str, transport: str, target: str, conns: int, plan: CostPlan) -> list[str]:
    return driver_argv(
        "pingpong",
        "--client",
        client,
        "--transport",
        transport,
        "--target",
        target,
        "--conns",
        str(conns),
        "--warmup",
        str(max(plan.warmup, 5 * conns)),
        "--messages",
        str(plan.messages[transport]),
        "--frame-bytes",
        str(plan.frame_bytes),
        "--timeout-s",
        str(plan.timeout_s),
    )


def measure(
    plan: CostPlan,
    targets: dict[str, str],
    c_binary: Path | None,
    progress: Any = None,
) -> dict[Key, list[dict[str, Any]]]:
    """Run every cell ``plan.repeat`` times, round-robin; returns the raw results per cell."""
    results: dict[Key, list[dict[str, Any]]] = {}
    for rep in range(plan.repeat):
        for transport in plan.transports:
            for conns in plan.conns:
                for client in plan.clients:
                    key = (transport, conns, client)
                    if client == "c":
                        if c_binary is None:
                            continue
                        if transport == "grpc":
                            # The TCP C run is the gRPC reference; measure it if tcp is not shown.
                            if "tcp" in plan.transports:
                                continue
                            argv = c_argv(c_binary, "tcp", targets["tcp"], conns, plan)
                        else:
                            argv = c_argv(c_binary, transport, targets[transport], conns, plan)
                    elif client == "bare":
                        argv = python_argv("ours", transport, targets[transport], conns, plan)
                        argv.append("--no-plugins")
                    else:
                        argv = python_argv(client, transport, targets[transport], conns, plan)
                    if progress is not None:
                        progress(f"run {rep + 1}/{plan.repeat}: {transport} x{conns} {client}")
                    result = run_json(argv, plan.timeout_s + 30, plan.cpu)
                    results.setdefault(key, []).append(result)
    # gRPC's C reference is the raw-TCP C cell when tcp was measured anyway.
    for conns in plan.conns:
        if ("tcp", conns, "c") in results and "grpc" in plan.transports:
            results[("grpc", conns, "c")] = results[("tcp", conns, "c")]
    return results


@dataclass
class Cell:
    """The summary of one (transport, conns, client) cell."""

    us_per_msg: float  # median CPU µs per message (nan if no run succeeded)
    sys_share: float  # median share of that CPU spent in the kernel
    low: float
    high: float
    msgs_per_s: float
    p50_us: float
    p99_us: float
    ok_runs: int
    errors: list[str]
    failures: int


def summarize(runs: list[dict[str, Any]]) -> Cell:
    good = [r for r in runs if "error" not in r and r.get("messages")]
    per = [r["cpu_s"] / r["messages"] * 1e6 for r in good]
    return Cell(
        us_per_msg=median(per),
        sys_share=median([r["sys_s"] / r["cpu_s"] for r in good if r["cpu_s"] > 0]),
        low=min(per) if per else float("nan"),
        high=max(per) if per else float("nan"),
        msgs_per_s=median([r["messages"] / r["wall_s"] for r in good if r["wall_s"] > 0]),
        p50_us=median([r["p50_us"] for r in good]),
        p99_us=median([r["p99_us"] for r in good]),
        ok_runs=len(good),
        errors=sorted({r["error"] for r in runs if "error" in r}),
        failures=sum(int(r.get("failures", 0)) for r in good),
    )


def verdict(transport: str, client: str, ratio: float) -> str:
    if client == "c" or ratio != ratio:  # nan
        return ""
    if client == "naive":
        return f"(quoted {QUOTED_NAIVE_RATIO[transport]:g}x)"
    if client == "bare":
        return ""
    target = TARGET_RATIO[transport]
    return f"<= {target:g}x {'met' if ratio <= target else 'MISSED'}"


def table(plan: CostPlan, results: dict[Key, list[dict[str, Any]]]) -> str:
    """The cost table (plain text, fixed width), one row per cell, in plan order."""
    head = (
        f"{'transport':<9} {'conns':>5}  {'client':<26} {'CPU us/msg':>10} {'spread':>13} "
        f"{'sys':>4} {'msg/s':>8} {'x C':>6}  target"
    )
    lines = [head, "-" * len(head)]
    for transport in plan.transports:
        for conns in plan.conns:
            ref = summarize(results.get((transport, conns, "c"), []))
            for client in plan.clients:
                runs = results.get((transport, conns, client), [])
                cell = summarize(runs)
                label = CLIENT_LABEL[(client, transport)]
                if not cell.ok_runs:
                    why = "; ".join(cell.errors) or "not run"
                    lines.append(f"{transport:<9} {conns:>5}  {label:<26} n/a: {why}")
                    continue
                ratio = cell.us_per_msg / ref.us_per_msg if ref.ok_runs else float("nan")
                spread = f"{cell.low:.1f}-{cell.high:.1f}"
                note = verdict(transport, client, ratio)
                if cell.failures:
                    note += f" [{cell.failures} failed msgs]"
                if cell.errors:
                    note += f" [{len(runs) - cell.ok_runs} runs failed: {cell.errors[0]}]"
                lines.append(
                    f"{transport:<9} {conns:>5}  {label:<26} {cell.us_per_msg:>10.1f} "
                    f"{spread:>13} {cell.sys_share:>4.0%} {cell.msgs_per_s:>8.0f} "
                    f"{ratio:>5.2f}x  {note}".rstrip()
                )
    lines.append(
        "spread = min-max over the repeats; sys = kernel share of the CPU; msg/s = throughput "
        "during the window (bounded by the Python echo servers, not only the client)"
    )
    lines.append(
        "(*) gRPC has no C client without a gRPC library; its reference is the C raw-TCP "
        "client at the same connection count."
    )
    return "\n".join(lines)
