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

The children are this module: ``python -m bench.wan timers|load|pingpong ...``; each prints one
JSON line at the end (the load child also prints ``{"event": "start"}`` when its window opens, so
the relay's CPU is read over the same window).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TIMER_KINDS = (
    "asyncio call_at",
    "uvloop call_at",
    "asyncio + timerfd",
    "uvloop + timerfd",
    "epoll + timerfd",
    "epoll timeout",
    "thread sleep",
)
RELAY_MODES = ("timerfd", "poll")
HEADER = struct.Struct("<QQ")  # seq, intended send time (ns), then padding to the frame size


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
    """``python -m bench.wan ARGS`` through the pdeath shim (it dies with the benchmark)."""
    env = dict(os.environ, ECHOSWARM_PARENT_PID=str(os.getpid()), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "echoswarm.pdeath", sys.executable, "-m", "bench.wan", *args],
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
    from echoswarm.commands import server_argv
    from echoswarm.supervise import ChildError, Supervisor

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


# --- the children ------------------------------------------------------------------------------


def _cpu_now() -> float:
    """This process's CPU time (all threads), precise (CLOCK_PROCESS_CPUTIME_ID)."""
    return time.process_time()


def _stats_us(late_ns: list[int]) -> dict[str, Any]:
    late_ns.sort()
    n = len(late_ns)
    return {
        "count": n,
        "late_p50_us": late_ns[n // 2] / 1e3,
        "late_p99_us": late_ns[min(n - 1, int(n * 0.99))] / 1e3,
        "late_max_us": late_ns[-1] / 1e3,
    }


def _plan_dues(rate: int, seconds: float) -> list[int]:
    rnd = random.Random(1)
    t = time.monotonic_ns() + 100_000_000
    end = t + int(seconds * 1e9)
    dues = []
    while t < end:
        t += int(rnd.expovariate(rate) * 1e9)
        dues.append(t)
    return dues


def child_timers(kind: str, rate: int, seconds: float) -> dict[str, Any]:
    """Run one timed callback per due time with ``kind``'s way of waiting; lateness and CPU."""
    dues = _plan_dues(rate, seconds)
    late: list[int] = []
    cpu0 = _cpu_now()
    if kind in ("epoll + timerfd", "epoll timeout"):
        from echoswarm.wan.clock import tighten_timer_slack
        from echoswarm.wan.reactor import Reactor

        tighten_timer_slack()
        reactor = Reactor("timerfd" if "timerfd" in kind else "poll")
        cpu0 = _cpu_now()
        for due in dues:
            reactor.call_at(due, _recorder(late, due, len(dues), reactor.stop))
        reactor.run()
        reactor.close()
    elif kind.endswith("call_at") or kind.endswith("+ timerfd"):
        loop = _new_loop(kind.split()[0])
        done: asyncio.Future[None] = loop.create_future()

        def finish() -> None:
            done.set_result(None)

        if kind.endswith("call_at"):
            for due in dues:
                loop.call_at(due / 1e9, _recorder(late, due, len(dues), finish))
        else:
            _timerfd_on_loop(loop, dues, late, finish)
        loop.run_until_complete(done)
        loop.close()
    elif kind == "thread sleep":
        from echoswarm.wan.clock import tighten_timer_slack

        def sleeper() -> None:
            tighten_timer_slack()
            for due in dues:
                wait = due - time.monotonic_ns()
                if wait > 0:
                    time.sleep(wait / 1e9)
                late.append(time.monotonic_ns() - due)

        th = threading.Thread(target=sleeper)
        th.start()
        th.join()
    else:
        raise SystemExit(f"unknown timer kind {kind!r}")
    cpu = _cpu_now() - cpu0
    return {"kind": kind, **_stats_us(late), "cpu_us_per_timer": cpu / len(dues) * 1e6}


def _recorder(
    late: list[int], due: int, total: int, done: Callable[[], None]
) -> Callable[[], None]:
    def fire() -> None:
        late.append(time.monotonic_ns() - due)
        if len(late) == total:
            done()

    return fire


def _new_loop(which: str) -> asyncio.AbstractEventLoop:
    if which == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _timerfd_on_loop(
    loop: asyncio.AbstractEventLoop, dues: list[int], late: list[int], done: Callable[[], None]
) -> None:
    """One timerfd watched by the loop (``add_reader``), re-armed to the next due time."""
    from echoswarm.wan.clock import TimerFd

    tfd = TimerFd()
    heap = list(dues)
    heapq.heapify(heap)

    def on_fire() -> None:
        now = time.monotonic_ns()
        while heap and heap[0] <= now:
            late.append(now - heapq.heappop(heap))
        if heap:
            tfd.arm(heap[0])
        else:
            loop.remove_reader(tfd.fileno())
            tfd.close()
            done()

    loop.add_reader(tfd.fileno(), on_fire)
    tfd.arm(heap[0])


class _Stream:
    """One paced stream of the load child: sends on schedule, matches echoes in order."""

    __slots__ = ("sock", "seq", "intended", "buf", "out", "frame_pad", "lags")

    def __init__(self, sock: socket.socket, frame_bytes: int) -> None:
        self.sock = sock
        self.seq = 0
        self.intended: deque[int] = deque()
        self.buf = bytearray()
        self.out = bytearray()
        self.frame_pad = b"\x5a" * (frame_bytes - HEADER.size)
        self.lags: list[int] = []  # actual − intended send time, in the window


def child_load(
    target: str, streams: int, frame_bytes: int, interval_ms: float, warmup_s: float, seconds: float
) -> dict[str, Any]:
    """``streams`` paced connections (a frame every ``interval_ms``), timed by our reactor."""
    from echoswarm.wan.reactor import Reactor

    host, _, port = target.rpartition(":")
    reactor = Reactor("timerfd")
    interval = int(interval_ms * 1e6)
    t_start = time.monotonic_ns() + 200_000_000
    window = [t_start + int(warmup_s * 1e9), t_start + int((warmup_s + seconds) * 1e9)]
    latencies: list[int] = []
    state = {"failures": 0, "echoes": 0, "cpu0": 0.0}
    conns = []
    for i in range(streams):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        st = _Stream(sock, frame_bytes)
        conns.append(st)
        first = t_start + i * interval // streams  # spread over one interval

        reactor.add_reader(
            sock.fileno(), _on_echo(reactor, st, frame_bytes, latencies, window, state)
        )
        reactor.call_at(first, _sender(reactor, st, first, interval, window[1]))

    def open_window() -> None:
        state["cpu0"] = _cpu_now()
        print(json.dumps({"event": "start"}), flush=True)

    reactor.call_at(window[0], open_window)
    reactor.call_at(window[1] + 1_000_000_000, reactor.stop)  # a last second for late echoes
    reactor.run()
    cpu = _cpu_now() - state["cpu0"]
    for st in conns:
        st.sock.close()
    reactor.close()
    lags = [lag for st in conns for lag in st.lags[int(warmup_s * 1e9) // interval :]]
    lag = _ms_stats(lags)
    return {
        "echoes": state["echoes"],
        "failures": state["failures"],
        "cpu_s": cpu,
        "lag_p50_ms": lag["p50_ms"],
        "lag_p99_ms": lag["p99_ms"],
        **_ms_stats(latencies),
    }


def _sender(reactor: Any, st: _Stream, first: int, interval: int, end: int) -> Callable[[], None]:
    def tick() -> None:
        due = first + st.seq * interval
        frame = HEADER.pack(st.seq, due) + st.frame_pad
        st.lags.append(time.monotonic_ns() - due)
        st.intended.append(due)
        st.seq += 1
        if st.out:
            st.out += frame
        else:
            try:
                sent = st.sock.send(frame)
            except BlockingIOError:
                sent = 0
            if sent < len(frame):
                st.out += frame[sent:]
                reactor.add_writer(st.sock.fileno(), _flusher(reactor, st))
        nxt = first + st.seq * interval
        if nxt < end:
            reactor.call_at(nxt, tick)

    return tick


def _flusher(reactor: Any, st: _Stream) -> Callable[[], None]:
    def flush() -> None:
        try:
            sent = st.sock.send(st.out)
        except BlockingIOError:
            return
        del st.out[:sent]
        if not st.out:
            reactor.remove_writer(st.sock.fileno())

    return flush


def _on_echo(
    reactor: Any,
    st: _Stream,
    frame_bytes: int,
    latencies: list[int],
    window: list[int],
    state: dict[str, Any],
) -> Callable[[], None]:
    def readable() -> None:
        try:
            data = st.sock.recv(262144)
        except BlockingIOError:
            return
        now = time.monotonic_ns()
        if not data:
            state["failures"] += 1  # the path closed a stream: counted, and stop reading it
            reactor.remove_reader(st.sock.fileno())
            return
        st.buf += data
        while len(st.buf) >= frame_bytes:
            seq, intended = HEADER.unpack_from(st.buf)
            expected = st.intended.popleft()
            if intended != expected:
                state["failures"] += 1
            del st.buf[:frame_bytes]
            if window[0] <= intended < window[1]:
                latencies.append(now - intended)
                state["echoes"] += 1

    return readable


def _ms_stats(values_ns: list[int]) -> dict[str, Any]:
    if not values_ns:
        return {"count": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    values_ns.sort()
    n = len(values_ns)
    return {
        "count": n,
        "p50_ms": values_ns[n // 2] / 1e6,
        "p90_ms": values_ns[int(n * 0.9)] / 1e6,
        "p99_ms": values_ns[min(n - 1, int(n * 0.99))] / 1e6,
        "max_ms": values_ns[-1] / 1e6,
    }


def child_pingpong(target: str, frame_bytes: int, seconds: float) -> dict[str, Any]:
    """One connection, one frame in flight, blocking sockets: the plainest round trip."""
    host, _, port = target.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sel = selectors.DefaultSelector()  # (only to keep recv bounded in time)
    sel.register(sock, selectors.EVENT_READ)
    pad = b"\xa5" * (frame_bytes - HEADER.size)
    rtts: list[int] = []
    end = time.monotonic_ns() + int(seconds * 1e9)
    seq = 0
    while time.monotonic_ns() < end:
        t0 = time.monotonic_ns()
        frame = HEADER.pack(seq, t0) + pad
        sock.sendall(frame)
        got = 0
        while got < frame_bytes:
            chunk = sock.recv(frame_bytes - got)
            if not chunk:
                raise SystemExit("ping-pong: connection closed")
            got += len(chunk)
        rtts.append(time.monotonic_ns() - t0)
        seq += 1
    sock.close()
    return _ms_stats(rtts)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.wan")
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("timers")
    t.add_argument("--kind", choices=TIMER_KINDS, required=True)
    t.add_argument("--rate", type=int, default=4800)
    t.add_argument("--seconds", type=float, default=3.0)
    ld = sub.add_parser("load")
    ld.add_argument("--target", required=True)
    ld.add_argument("--streams", type=int, default=240)
    ld.add_argument("--frame-bytes", type=int, default=3200)
    ld.add_argument("--interval-ms", type=float, default=100.0)
    ld.add_argument("--warmup-s", type=float, default=2.0)
    ld.add_argument("--seconds", type=float, default=10.0)
    pp = sub.add_parser("pingpong")
    pp.add_argument("--target", required=True)
    pp.add_argument("--frame-bytes", type=int, default=3200)
    pp.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    if args.what == "timers":
        result = child_timers(args.kind, args.rate, args.seconds)
    elif args.what == "load":
        result = child_load(
            args.target, args.streams, args.frame_bytes, args.interval_ms, args.warmup_s,
            args.seconds,
        )  # fmt: skip
    else:
        result = child_pingpong(args.target, args.frame_bytes, args.seconds)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
