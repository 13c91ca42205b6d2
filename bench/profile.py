"""Where the load generator's time goes: sample our user under py-spy and summarise.

    python -m bench profile [--transports tcp,ws,grpc] [--conns 1] [--messages N]

Runs ``bench.driver pingpong --client ours`` under ``py-spy record --gil --threads -f raw`` (a
sampling profiler outside the process: no tracing overhead; ``--gil`` keeps the samples that
hold the GIL, i.e. the Python-level CPU work, not the time in syscalls or in the hub's epoll
wait) against a fresh echo server, then prints per transport:

* the share of samples by *area* (the syscall wrappers of gevent sockets, gevent's hub,
  Locust's event/stats machinery, our results plugin, our user/measurement code, gRPC, ...);
* the top functions by self time (the leaf frame of each sample).

Samples taken during start-up (imports) and in idle worker threads are left out. Without
py-spy (``pip install py-spy==0.4.3``) it falls back to cProfile inside the driver
(``--profile``), whose tracing overhead inflates small functions.
"""

from __future__ import annotations

import pstats
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench import cost
from bench.harness import BUILD, ROOT

# (area, pattern on a frame "function (file:line)"), first match from the leaf up wins.
AREAS: list[tuple[str, re.Pattern[str]]] = [
    ("socket syscalls", re.compile(r"SocketMixin\.(send|recv|recv_into|getsockopt|sendall)\b")),
    ("gevent hub/wait", re.compile(r"gevent/(hub|_hub|_waiter|event|timeout|_abstract_linkable)")),
    ("results plugin", re.compile(r"echoswarm/(collect|results|hdr)|hdrh/|pyarrow/")),
    ("locust stats/events", re.compile(r"locust/")),
    ("grpc", re.compile(r"grpc/|_cython|cygrpc")),
    ("websocket-client", re.compile(r"websocket/")),
    ("protobuf", re.compile(r"protobuf|_pb2")),
    ("our user + measure", re.compile(r"echoswarm/")),
    ("gevent other", re.compile(r"gevent/")),
]
STARTUP = ("_find_and_load", "<module>")
IDLE_LEAVES = ("acquire_with_timeout",)


def area_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for area, pat in AREAS:
            if pat.search(frame):
                return area
    return "other"


def summarise_raw(path: Path, top: int = 15) -> str:
    """Area shares and top self-time functions of a py-spy raw (collapsed stacks) file."""
    areas: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        if any(s in stack for s in STARTUP) or frames[-1].startswith(IDLE_LEAVES):
            continue
        n = int(count)
        total += n
        areas[area_of(frames)] += n
        leaves[_short(frames[-1])] += n
    if not total:
        return "(no samples)"
    lines = [f"{total} samples"]
    lines += [f"  {n / total:6.1%}  {area}" for area, n in areas.most_common()]
    lines.append("  top functions by self time:")
    lines += [f"  {n / total:6.1%}  {fn}" for fn, n in leaves.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "SocketMixin.send (gevent/_socketcommon.py:716)" -> keep, minus long site-packages paths
    return re.sub(r"\(/[^)]*site-packages/", "(", frame)


def profile_transport(
    transport: str, target: str, conns: int, messages: int, timeout_s: float = 120.0
) -> str:
    # The same driver command line as the cost table's "ours" row.
    plan = cost.CostPlan(warmup=500, messages={transport: messages})
    argv = cost.python_argv("ours", transport, target, conns, plan)
    BUILD.mkdir(exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if Path(spy).exists():
        out = BUILD / f"profile-{transport}-{conns}.txt"
        # --gil: only samples holding the GIL, i.e. Python work. Without it the hub's epoll
        # wait (C code, GIL released) is not recognised as idle and swamps the profile; the
        # kernel's share is the sys column of the cost table.
        cmd = [spy, "record", "-r", "400", "--gil", "--threads", "-f", "raw"]
        cmd += ["-o", str(out), "--"]
        proc = subprocess.run(
            cmd + argv, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT
        )
        if proc.returncode == 0 and out.exists():
            return summarise_raw(out)
        return f"py-spy failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"
    stats_path = BUILD / f"profile-{transport}-{conns}.pstats"
    subprocess.run(
        argv + ["--profile", str(stats_path)],
        capture_output=True,
        timeout=timeout_s,
        cwd=ROOT,
    )
    if not stats_path.exists():
        return "cProfile run failed"
    return _pstats_top(stats_path)


def _pstats_top(path: Path, top: int = 15) -> str:
    stats = pstats.Stats(str(path))
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    total = sum(v[2] for _, v in rows) or 1.0
    lines = ["cProfile (tracing overhead inflates small functions); top by self time:"]
    for (file, line, fn), v in rows[:top]:
        lines.append(f"  {v[2] / total:6.1%}  {fn} ({Path(file).name}:{line})")
    return "\n".join(lines)
