"""``python -m echoswarm run|demo|sweep`` — local orchestration (see README).

    python -m echoswarm run locustfiles/audio_stream.py --workers 2 -u 60 -t 30s \\
        --slo "grpc:bidi msg:p99<20ms" --slo "*:*:error_rate<0.1%" -- --mode paced
    python -m echoswarm demo        # the S000 comparison: gRPC vs WebSocket vs TCP, ~1 minute
    python -m echoswarm run locustfiles/audio_stream.py -u 30 -t 30s --wan rtt=20ms,jitter=2ms

Exit codes: 0 ok · 1 an SLO violated · 2 usage error · 3 run error · 4 completed but degraded
(a worker was lost and replaced; results partial) · 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from echoswarm import argtypes
from echoswarm.orchestrate import config, instrument, preflight, slo, wanpath
from echoswarm.orchestrate.run import EXIT_USAGE, LocalRun, RunConfig
from echoswarm.orchestrate.scenario import ScenarioError, read_servers

DEMO_LOCUSTFILE = Path("locustfiles/audio_stream.py")
DEMO = {"workers": 2, "users": 240, "spawn_rate": 240.0, "time": "50s"}
BUILTIN = {"workers": 2, "users": 10, "spawn_rate": 10.0, "time": "30s", "web_port": 8089}


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as ONE line (and exit 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


# Validators of the numeric run options: the flags and the config file's values go through the
# same ones (echoswarm.argtypes), so each has one bound and one message.
BOUNDS: dict[str, Callable[[str], Any]] = {
    "workers": argtypes.local_workers,
    "users": argtypes.users,
    "spawn_rate": argtypes.spawn_rate,
    "web_port": argtypes.tcp_port,
    "master_timeout_s": argtypes.float_between(1.0, 3600.0, " s"),
}


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=BOUNDS["workers"],
        default=None,
        help=f"Locust worker processes (2; at most {argtypes.MAX_LOCAL_WORKERS})",
    )
    p.add_argument(
        "-u",
        "--users",
        type=BOUNDS["users"],
        default=None,
        help=f"peak concurrent users (10; at most {argtypes.MAX_USERS:,})",
    )
    p.add_argument(
        "-r",
        "--spawn-rate",
        type=BOUNDS["spawn_rate"],
        default=None,
        help=f"users started/s (10; at most {argtypes.MAX_SPAWN_RATE:,.0f})",
    )
    p.add_argument("-t", "--time", default=None, help="run time, e.g. 30s, 2m, 1h (30s; ≤ 24h)")
    p.add_argument("--results", type=Path, default=None, help="results directory to write")
    p.add_argument(
        "--slo",
        action="append",
        default=None,
        metavar="EXPR",
        help='objective, e.g. "grpc:bidi msg:p99<20ms" or "*:*:error_rate<0.1%%" (repeatable)',
    )
    p.add_argument("--web", action="store_true", default=None, help="serve Locust's web UI")
    p.add_argument("--web-port", type=BOUNDS["web_port"], default=None, help="web UI port (8089)")
    p.add_argument("--no-report", dest="report", action="store_false", default=None)
    p.add_argument("--config", type=Path, default=None, help="echoswarm.toml or conf file")
    p.add_argument(
        "--wan",
        default=None,
        metavar="SPEC",
        help="reach the servers through the WAN emulator: rtt=20ms[,jitter=2ms][,rate=100mbit]",
    )
    p.add_argument(
        "--master-timeout-s",
        type=BOUNDS["master_timeout_s"],
        default=None,
        help="workers quit this long after the master goes silent (Locust's default: 60)",
    )
    p.add_argument(
        "--instrument-overhead",
        type=Path,
        default=None,
        metavar="FILE",
        help="the instrument's overhead as saved by `python -m bench overhead`, put in run.json "
        "for the report (demo: build/bench-results/overhead.json when it exists)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m echoswarm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,demo,sweep}")
    run = sub.add_parser(
        "run", help="servers + Locust master + workers on this machine", prog="echoswarm run"
    )
    run.add_argument("locustfile", type=Path, nargs="?", help="locustfiles/<scenario>.py")
    _add_run_flags(run)
    demo = sub.add_parser("demo", help="the S000 comparison (~1 min)", prog="echoswarm demo")
    _add_run_flags(demo)
    sweep = sub.add_parser("sweep", help="model x concurrency sweeps", add_help=False)
    sweep.add_argument("rest", nargs=argparse.REMAINDER)
    for p in (run, demo):
        p.error = parser.error  # type: ignore[method-assign]
    return parser


def parse_time(text: str) -> float:
    """Locust's run-time syntax (``90``, ``30s``, ``2m``, ``1h30m``) → seconds."""
    given = text
    text = text.strip().lower()
    if re.fullmatch(r"\d+", text):
        text += "s"
    m = re.fullmatch(r"(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?", text)
    if not text or not m or not any(m.groups()):
        raise UsageError(f"bad run time {given!r} (use e.g. 30s, 2m, 1h30m)")
    h, mnt, s = (int(g) if g else 0 for g in m.groups())
    seconds = float(h * 3600 + mnt * 60 + s)
    if not 1 <= seconds <= argtypes.MAX_RUN_SECONDS:
        raise UsageError(f"run time {given!r} is outside 1s..24h")
    return seconds


def make_config(ns: argparse.Namespace, extra: list[str], argv: list[str]) -> RunConfig:
    file_opts = config.load(ns.config)
    defaults: dict[str, Any] = {**BUILTIN, **(DEMO if ns.command == "demo" else {})}

    def pick(key: str, flag: Any) -> Any:
        if flag is not None:
            return flag
        value = file_opts.get(key, defaults.get(key))
        check = BOUNDS.get(key)
        if check is not None and key in file_opts and value is not None:
            try:  # the file's value gets the flag's bound and message
                value = check(str(value))
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"{key.replace('_', '-')} in the config file: {exc}") from None
        return value

    locustfile = DEMO_LOCUSTFILE if ns.command == "demo" else ns.locustfile
    if locustfile is None:
        locustfile = file_opts.get("locustfile")
        if locustfile is None:
            raise UsageError("no locustfile given (argument or 'locustfile' in the config file)")
    locustfile = Path(locustfile)
    if not locustfile.is_file():
        raise UsageError(f"locustfile not found: {locustfile}")
    workers, users = pick("workers", ns.workers), pick("users", ns.users)
    spawn_rate = float(pick("spawn_rate", ns.spawn_rate))
    run_time = str(pick("time", ns.time))
    seconds = parse_time(run_time)
    slo_texts = (file_opts.get("slo") or []) + (ns.slo or [])
    try:
        slos = slo.parse_all(slo_texts)
    except slo.SLOError as exc:
        raise UsageError(str(exc)) from None
    results = pick("results", ns.results)
    wan_text = pick("wan", ns.wan)
    overhead_file = pick("instrument_overhead", ns.instrument_overhead)
    if overhead_file is None and ns.command == "demo" and instrument.SAVED.is_file():
        overhead_file = instrument.SAVED
    try:
        overhead = instrument.load(Path(overhead_file)) if overhead_file else None
    except instrument.OverheadFileError as exc:
        raise UsageError(str(exc)) from None
    return RunConfig(
        locustfile=locustfile,
        workers=int(workers),
        users=int(users),
        spawn_rate=spawn_rate,
        run_time=run_time,
        run_seconds=seconds,
        results=Path(results) if results else None,
        slos=slos,
        web=bool(pick("web", ns.web)),
        web_port=int(pick("web_port", ns.web_port)),
        locust_args=[*file_opts.get("locust_args", []), *extra],
        report=pick("report", ns.report) is not False,
        argv=argv,
        master_timeout_s=pick("master_timeout_s", ns.master_timeout_s),
        wan=wanpath.parse(str(wan_text)) if wan_text else None,
        instrument_overhead=overhead,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sweep"]:  # the sweep has its own parser (flags may precede the file)
        from echoswarm.sweep import cli as sweep

        return sweep.main(argv[1:])
    if argv[:1] == ["wan"]:  # the WAN emulator (echoswarm.wan) has its own parser
        from echoswarm.wan.cli import main as wan_main

        return wan_main(argv[1:])
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    parser = build_parser()
    ns = parser.parse_args(argv)
    prog = f"python -m echoswarm {ns.command}"
    try:
        cfg = make_config(ns, extra, argv)
        read_servers(cfg.locustfile)  # a malformed declaration is a usage error, before start
        # Locust loads the file (users? arguments?) before anything is started or created.
        preflight.user_classes(cfg.locustfile, cfg.locust_args)
        run = LocalRun(cfg)
        preflight.make_results_dir(run.results)
    except (
        UsageError,
        config.ConfigError,
        ScenarioError,
        preflight.PreflightError,
        wanpath.WanUsageError,
    ) as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return EXIT_USAGE
    code = run.execute()
    if ns.command == "demo" and (run.results / "summary.csv").exists():
        table = subprocess.run(
            [sys.executable, "-m", "analysis", "s000", str(run.results)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        print("\n" + (table.stdout or table.stderr).rstrip())
    return code


if __name__ == "__main__":
    sys.exit(main())
