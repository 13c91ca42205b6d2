"""``python -m bench wan`` — what the WAN emulator itself costs: added latency and CPU.

    python -m bench wan [--quick] [--wan-seconds S] [--wan-streams N] [--repeat R]

Two parts (method and reference figures in ``bench/README.md``):

* **timers** — how late a timed wake-up comes, and its CPU, for each way the relay could wait:
  asyncio's and uvloop's own timers, a timerfd watched by either loop, our epoll loop with a
  timerfd (``echoswarm.wan.reactor``, what the relay uses) or with epoll's own timeout, and a
  thread sleeping until each due time. One child process per variant; 4,800 wake-ups/s at
  exponentially spaced due times (the demo's load through a relay: 240 streams × 10 frames/s ×
  two directions).
* **relay** — ``python -m servers tcp`` behind ``python -m echoswarm wan --rtt 20ms`` (with its
  timerfd, then with ``--timer poll``), under the demo's load: 240 paced streams of 3,200 B
  every 100 ms through it (one child process) plus one ping-pong connection (another child). The
  emulator's own latency is (round trip through it) − 20 ms − (round trip straight to the
  server, measured by a second ping-pong connection in the same window), at p50 and p99; its
  CPU per echoed frame is the relay process's CPU time over the window (the scheduler's own
  accounting) divided by the frames echoed through it. Idle windows (ping-pong only) and loaded
  ones, per timer mode, in ``--repeat`` interleaved rounds (3); the table shows medians.

The measurements run in child processes (:mod:`bench.wan_children`); each prints one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.wan_children import TIMER_KINDS

ROOT = Path(__file__).resolve().parent.parent
RELAY_MODES = ("timerfd", "poll")


@dataclass
class WanPlan:
    rtt_ms: float = 20.0
    streams: int = 240
    frame_bytes: int = 3200
    interval_ms: float = 100.0
    seconds: float = 6.0
    warmup_s: float = 2.0
    repeat: int = 3
    timer_rate: int = 4800
    timer_seconds: float = 3.0
    modes: tuple[str, ...] = RELAY_MODES
    timer_kinds: tuple[str, ...] = TIMER_KINDS

    def quick(self) -> None:
        self.seconds, self.warmup_s, self.timer_seconds, self.repeat = 3.0, 1.0, 1.0, 1


@dataclass
class RelayRun:
    """One window: a relay in ``mode`` with ``streams`` paced streams through it, and two
    ping-pong connections at the same time, one straight to the server, one through the relay."""

    mode: str
    streams: int
    direct: dict[str, Any] = field(default_factory=dict)
    relayed: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    relay_cpu_s: float | None = None
    server_cpu_s: float | None = None
    wan_stats: dict[str, Any] = field(default_factory=dict)  # the relay's own --stats
    error: str = ""


# --- the parent: start children, read their JSON, print tables --------------------------------


def _child(*args: str) -> subprocess.Popen[str]:
    """``python -m bench.wan_children ARGS`` through the pdeath shim (dies with the benchmark)."""
    env = dict(os.environ, ECHOSWARM_PARENT_PID=str(os.getpid()), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "echoswarm.pdeath", sys.executable, "-m", "bench.wan_children"]
        + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )


def _finish(p: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    """The child's last JSON line, or ``{"error": ...}``."""
    try:
        out, err = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return {"error": f"no result within {timeout_s:g} s"}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        last = [ln for ln in err.splitlines() if ln.strip()]
        return {"error": (last[-1] if last else f"exit code {p.returncode}")[:200]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure_timers(plan: WanPlan, progress: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in plan.timer_kinds:
        progress(f"timers: {kind}")
        p = _child(
            "timers", "--kind", kind, "--rate", str(plan.timer_rate),
            "--seconds", str(plan.timer_seconds),
        )  # fmt: skip
        out[kind] = _finish(p, plan.timer_seconds + 30)
    return out


def measure_relay(plan: WanPlan, progress: Callable[[str], None], log_dir: Path) -> list[RelayRun]:
    """Per round, per timer mode: idle (ping-pong only), then under the demo's load. Rounds
    interleave the cells, so a burst of load from elsewhere on the machine hits them alike."""
    from echoswarm.orchestrate.commands import server_argv
    from echoswarm.orchestrate.supervise import ChildError, Supervisor

    runs = []
    for rnd in range(plan.repeat):
        for mode in plan.modes:
            for streams in (0, plan.streams):
                sup = Supervisor(log_dir, cwd=ROOT)
                stats = log_dir / f"wan-stats-{mode}-{streams}-{rnd}.json"
                stats.unlink(missing_ok=True)
                try:
                    server = sup.start("wan-bench-server", "server", server_argv("tcp", port=0))
                    host, port = sup.wait_listening(server)
                    progress(
                        f"relay: round {rnd + 1}/{plan.repeat}, timer {mode}, {streams} streams"
                    )
                    target = f"{host}:{port}"
                    run = _one_window(plan, mode, streams, sup, target, server.pid, stats)
                    runs.append(run)
                except ChildError as exc:
                    runs.append(RelayRun(mode, streams, error=str(exc)))
                finally:
                    sup.stop_all()  # the relay writes its stats as it stops
                if stats.exists():
                    runs[-1].wan_stats = json.loads(stats.read_text())
    return runs


def _one_window(
    plan: WanPlan, mode: str, streams: int, sup: Any, server: str, server_pid: int, stats: Path
) -> RelayRun:
    from echoswarm import wan

    run = RelayRun(mode, streams)
    spec = wan.WanSpec.parse(f"rtt={plan.rtt_ms:g}ms")
    argv = wan.relay_argv(spec, [("127.0.0.1:0", server)], timer=mode, stats=stats)
    relay = sup.start(f"wan-{mode}", "server", argv)
    host, port = sup.wait_listening(relay)
    via = f"{host}:{port}"
    load = None
    if streams:
        load = _child(
            "load", "--target", via, "--streams", str(streams),
            "--frame-bytes", str(plan.frame_bytes), "--interval-ms", str(plan.interval_ms),
            "--warmup-s", str(plan.warmup_s), "--seconds", str(plan.seconds),
        )  # fmt: skip
        assert load.stdout is not None
        started = load.stdout.readline()  # {"event": "start"} when its window opens
        if not started.startswith('{"event": "start"'):
            run.load = _finish(load, 30)
            run.error = run.load.get("error", f"load child said {started!r}")
            return run
    cpu0 = (_cpu_s(relay.pid), _cpu_s(server_pid))
    seconds = str(max(0.5, plan.seconds - 0.5) if streams else plan.seconds)
    pings = [
        _child(
            "pingpong", "--target", t, "--frame-bytes", str(plan.frame_bytes), "--seconds", seconds
        )  # fmt: skip
        for t in (server, via)
    ]
    run.direct, run.relayed = (_finish(p, plan.seconds + 30) for p in pings)
    if load is not None:
        run.load = _finish(load, plan.seconds + 30)
    cpu1 = (_cpu_s(relay.pid), _cpu_s(server_pid))
    if None not in cpu0 and None not in cpu1:
        run.relay_cpu_s = cpu1[0] - cpu0[0]  # type: ignore[operator]
        run.server_cpu_s = cpu1[1] - cpu0[1]  # type: ignore[operator]
    run.error = next((r["error"] for r in (run.load, run.direct, run.relayed) if "error" in r), "")
    return run


def _cpu_s(pid: int) -> float | None:
    """CPU time of a process's live threads, from the scheduler's own nanosecond accounting
    (``/proc/PID/task/*/schedstat``): ``cpu_times()`` is tick-sampled, which misjudges a
    process that runs many short bursts (it is charged whole 10 ms ticks, or none)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def timers_table(results: dict[str, dict[str, Any]], plan: WanPlan) -> str:
    head = (
        f"{'wait':<20} {'wake-ups':>8} {'late p50 µs':>11} {'p99 µs':>9} {'max µs':>9} "
        f"{'CPU µs/wake-up':>14}"
    )
    rows = [head, "-" * len(head)]
    for kind, r in results.items():
        if "error" in r:
            rows.append(f"{kind:<20} n/a: {r['error']}")
            continue
        rows.append(
            f"{kind:<20} {r['count']:>8} {r['late_p50_us']:>11.1f} {r['late_p99_us']:>9.1f} "
            f"{r['late_max_us']:>9.1f} {r['cpu_us_per_timer']:>14.2f}"
        )
    rows.append(
        f"({plan.timer_rate} timed wake-ups/s, exponential spacing, {plan.timer_seconds:g} s each;"
        " 'late' = when the callback ran − its due time)"
    )
    return "\n".join(rows)


def figures(r: RelayRun, rtt: float) -> dict[str, float]:
    """One window's figures (ms; CPU in µs per echo); empty if it failed."""
    if r.error:
        return {}
    d, v = r.direct, r.relayed
    out = {
        "direct_p50": d["p50_ms"],
        "direct_p99": d["p99_ms"],
        "via_p50": v["p50_ms"],
        "via_p99": v["p99_ms"],
        "added_p50": v["p50_ms"] - rtt - d["p50_ms"],
        "added_p99": v["p99_ms"] - rtt - d["p99_ms"],
    }
    if r.load:
        out["streams_p50"] = r.load["p50_ms"] - rtt
        out["streams_p99"] = r.load["p99_ms"] - rtt
    echoes = r.load.get("echoes", 0) + v.get("count", 0)
    if r.wan_stats:
        out["wan_late_p50"] = r.wan_stats["late_p50_us_max"]
        out["wan_late_p99"] = r.wan_stats["late_p99_us_max"]
    if r.relay_cpu_s is not None and r.server_cpu_s is not None and echoes:
        out["wan_cpu"] = r.relay_cpu_s / echoes * 1e6
        out["server_cpu"] = r.server_cpu_s / (echoes + d.get("count", 0)) * 1e6
    return out


def relay_table(runs: list[RelayRun], plan: WanPlan) -> str:
    """Medians over the rounds, per timer mode and stream count (added p50 with its range)."""
    rtt = plan.rtt_ms
    head = (
        f"{'timer':<8} {'streams':>7} | {'direct p50':>10} {'p99':>6} | {'via wan p50':>11} "
        f"{'p99':>6} | {'added p50':>9} {'(min–max)':>13} {'p99':>6} | {'streams−rtt p50':>15} "
        f"{'p99':>6} | {'CPU µs/echo: wan':>16} {'server':>6} | {'wan late µs ≤ p50':>17} "
        f"{'p99':>6}"
    )
    rows = [head, "-" * len(head)]
    keys = list(dict.fromkeys((r.mode, r.streams) for r in runs))
    for mode, streams in keys:
        cell = [r for r in runs if (r.mode, r.streams) == (mode, streams)]
        figs = [f for f in (figures(r, rtt) for r in cell) if f]
        label = f"{mode:<8} {streams:>7}"
        if not figs:
            rows.append(f"{label} | n/a: {next(r.error for r in cell if r.error)}")
            continue

        def med(key: str, width: int, digits: int = 3, figs: list[dict[str, float]] = figs) -> str:
            values = [f[key] for f in figs if key in f]
            return f"{statistics.median(values):>{width}.{digits}f}" if values else "-".rjust(width)

        added = [f["added_p50"] for f in figs]
        spread = f"({min(added):.3f}–{max(added):.3f})"
        rows.append(
            f"{label} | {med('direct_p50', 10)} {med('direct_p99', 6, 2)} | "
            f"{med('via_p50', 11)} {med('via_p99', 6, 2)} | {med('added_p50', 9)} {spread:>13} "
            f"{med('added_p99', 6, 2)} | {med('streams_p50', 15)} {med('streams_p99', 6, 2)} | "
            f"{med('wan_cpu', 16, 1)} {med('server_cpu', 6, 1)} | "
            f"{med('wan_late_p50', 17, 0)} {med('wan_late_p99', 6, 0)}"
        )
        failures = sum(r.load.get("failures", 0) for r in cell)
        errors = [r.error for r in cell if r.error]
        if failures or errors:
            rows.append(f"  ({failures} stream failures; {len(errors)} failed windows)")
    rows.append(
        f"(ms unless marked; medians of {plan.repeat} interleaved rounds; rtt {rtt:g} ms; "
        f"{plan.frame_bytes} B frames; streams: one every {plan.interval_ms:g} ms each, through "
        f"the wan; the two ping-pong connections run in the same {plan.seconds:g} s window, one "
        f"straight to the server, one through the wan; added = via wan − {rtt:g} ms − direct; "
        f"streams−rtt = reply − intended send − {rtt:g} ms; wan late = how late the relay's "
        "timed releases ran, by its own --stats, upper bounds of power-of-two buckets)"
    )
    return "\n".join(rows)


def machine_load() -> str:
    """The load average and CPU pressure (PSI) now: how busy the machine was, for the reader."""
    parts = []
    try:
        parts.append("load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3]))
        psi = Path("/proc/pressure/cpu").read_text().split("\n")[0].split()
        parts.append("CPU pressure " + psi[1].replace("avg10=", "avg10 ") + "%")
    except (OSError, IndexError):
        pass
    return ", ".join(parts) or "load unknown"


def run(plan: WanPlan, say: Callable[[str], None], note: Callable[[str], None]) -> None:
    from bench.harness import BUILD

    say(f"(before: {machine_load()})")
    timers = measure_timers(plan, note)
    say("\n== wan: timed wake-ups — how late, and what they cost ==")
    say(timers_table(timers, plan))
    runs = measure_relay(plan, note, BUILD / "bench-logs")
    say(f"\n== wan: the emulator's own latency and CPU (rtt {plan.rtt_ms:g} ms) ==")
    say(relay_table(runs, plan))
    say(f"(after: {machine_load()})")
