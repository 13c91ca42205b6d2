"""``python -m echoswarm run|demo|sweep`` — local orchestration (see README).

    python -m echoswarm run locustfiles/audio_stream.py --workers 2 -u 60 -t 30s \\
        --slo "grpc:bidi msg:p99<20ms" --slo "*:*:error_rate<0.1%" -- --mode paced
    python -m echoswarm demo        # the S000 comparison: gRPC vs WebSocket vs TCP, ~1 minute

Exit codes: 0 ok · 1 an SLO violated · 2 usage error · 3 run error · 4 completed but degraded
(a worker was lost and replaced; results partial) · 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

from echoswarm import argtypes
from echoswarm.orchestrate import config, slo
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


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None, help="Locust worker processes (2)")
    p.add_argument("-u", "--users", type=int, default=None, help="peak concurrent users (10)")
    p.add_argument("-r", "--spawn-rate", type=float, default=None, help="users started/s (10)")
    p.add_argument("-t", "--time", default=None, help="run time, e.g. 30s, 2m, 1h (30s)")
    p.add_argument("--results", type=Path, default=None, help="results directory to write")
    p.add_argument(
        "--slo",
        action="append",
        default=None,
        metavar="EXPR",
        help='objective, e.g. "grpc:bidi msg:p99<20ms" or "*:*:error_rate<0.1%%" (repeatable)',
    )
    p.add_argument("--web", action="store_true", default=None, help="serve Locust's web UI")
    p.add_argument("--web-port", type=int, default=None, help="web UI port (8089)")
    p.add_argument("--no-report", dest="report", action="store_false", default=None)
    p.add_argument("--config", type=Path, default=None, help="echoswarm.toml or conf file")
    p.add_argument(
        "--master-timeout-s",
        type=argtypes.float_between(1.0, 3600.0, " s"),
        default=None,
        help="workers quit this long after the master goes silent (Locust's default: 60)",
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
    text = text.strip().lower()
    if re.fullmatch(r"\d+", text):
        return float(text)
    m = re.fullmatch(r"(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?", text)
    if not text or not m or not any(m.groups()):
        raise UsageError(f"bad run time {text!r} (use e.g. 30s, 2m, 1h30m)")
    h, mnt, s = (int(g) if g else 0 for g in m.groups())
    return float(h * 3600 + mnt * 60 + s)


def make_config(ns: argparse.Namespace, extra: list[str], argv: list[str]) -> RunConfig:
    file_opts = config.load(ns.config)
    defaults: dict[str, Any] = {**BUILTIN, **(DEMO if ns.command == "demo" else {})}

    def pick(key: str, flag: Any) -> Any:
        if flag is not None:
            return flag
        return file_opts.get(key, defaults.get(key))

    locustfile = DEMO_LOCUSTFILE if ns.command == "demo" else ns.locustfile
    if locustfile is None:
        locustfile = file_opts.get("locustfile")
        if locustfile is None:
            raise UsageError("no locustfile given (argument or 'locustfile' in the config file)")
    locustfile = Path(locustfile)
    if not locustfile.is_file():
        raise UsageError(f"locustfile not found: {locustfile}")
    workers, users = pick("workers", ns.workers), pick("users", ns.users)
    if int(workers) < 1:
        raise UsageError("--workers must be at least 1")
    if int(users) < 1:
        raise UsageError("--users must be at least 1")
    spawn_rate = float(pick("spawn_rate", ns.spawn_rate))
    if spawn_rate <= 0:
        raise UsageError("--spawn-rate must be > 0")
    run_time = str(pick("time", ns.time))
    seconds = parse_time(run_time)
    if seconds <= 0:
        raise UsageError("--time must be > 0")
    slo_texts = (file_opts.get("slo") or []) + (ns.slo or [])
    try:
        slos = slo.parse_all(slo_texts)
    except slo.SLOError as exc:
        raise UsageError(str(exc)) from None
    results = pick("results", ns.results)
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
    except (UsageError, config.ConfigError, ScenarioError) as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return EXIT_USAGE
    run = LocalRun(cfg)
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
