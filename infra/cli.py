"""``python -m infra plan|up|run|status|fetch|down|sweep`` — argument parsing (every flag bounded
and checked before AWS is contacted), the plan printout, and the mapping of every failure to one
line on stderr and an exit code: 0 ok, 1 AWS refused or a step failed, 2 usage (flags, the state
file), 128 + the signal when interrupted (:mod:`infra.interrupt`)."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import botocore.exceptions

from echoswarm.argtypes import MAX_SPAWN_RATE, MAX_USERS, float_between, int_between
from infra import interrupt, prices, state, tarball
from infra.aws import Cloud, check_region, error_text, progress
from infra.spec import (
    DEFAULT_REGION,
    MASTER_PORT,
    MAX_LIFETIME_MINUTES,
    MAX_WORKERS,
    MIN_WEB_PREFIX,
    SUBNET_CIDR,
    VPC_CIDR,
    WEB_PORT,
    InfraError,
    RunSpec,
    UsageError,
    check_instance_type,
    check_run_id,
    new_run_id,
    parse_cidr,
    parse_lifetime,
    parse_servers,
)

# Bounds of `run`'s flags (MAX_USERS, MAX_SPAWN_RATE: echoswarm.argtypes, shared with the local
# orchestrator): far beyond any sane test, small enough to catch a typo.
MAX_OLDER_THAN_DAYS = 3650


def run_time(text: str) -> str:
    """argparse type: Locust's ``-t`` (``90``, ``30s``, ``1m30s``, ``2h``), 1 s .. 24 h."""
    from infra.testrun import timespan_seconds

    try:
        seconds = timespan_seconds(text)
    except UsageError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 60s, 5m or 1h30m") from None
    if not 1 <= seconds <= MAX_LIFETIME_MINUTES * 60:
        raise argparse.ArgumentTypeError(f"{text!r} is outside 1s..{MAX_LIFETIME_MINUTES // 60}h")
    return text.strip()


# What the server node runs per kind (one systemd unit each): listed by ``plan``.
SERVER_PROCESSES = {
    "grpc": "grpc echo server",
    "ws": "ws echo server",
    "tcp": "tcp echo server",
    "jobs": "jobs API (uvicorn) + its redis-server (private unix socket, redis6 package) + "
    "3 rq worker processes and their scheduler (the locustfile's --queue-workers)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the whole usage block
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--region", help=f"AWS region (default {DEFAULT_REGION}, or the run's)")
    common.add_argument("--profile", help="AWS profile (default: the standard credential chain)")
    common.add_argument("--run-id", help="the run (default: the last one started here)")
    p = _Parser(prog="python -m infra", description="echoswarm on EC2 (Tokyo by default)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    def shape(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--workers", type=int_between(1, MAX_WORKERS), default=2)
        sp.add_argument("--worker-type", default="c7i.large")
        sp.add_argument("--master-type", default="c7i.large")
        sp.add_argument("--server-type", default="c7i.xlarge")
        sp.add_argument(
            "--servers", default="grpc,ws,tcp", help="kinds on the server node (also: jobs)"
        )
        sp.add_argument("--spot", action="store_true", help="workers on spot capacity")
        sp.add_argument("--max-lifetime", default="2h", help="every node ends itself after this")
        sp.add_argument(
            "--allow-cidr",
            help="also let these addresses open the web UI directly (8089, plain HTTP, no login;"
            " default: no open port, the UI is reached through an SSM port forward)",
        )
        sp.add_argument(
            "--allow-wide-cidr",
            action="store_true",
            help=f"accept an --allow-cidr wider than /{MIN_WEB_PREFIX}",
        )
        sp.add_argument("--subnet", help="use this existing subnet instead of a new VPC")
        sp.add_argument(
            "--include",
            action="append",
            default=[],
            metavar="PATH",
            help="also ship this untracked file or directory (repeatable; secrets never ship)",
        )

    shape(sub.add_parser("plan", parents=[common], help="what up would create, and its cost"))
    shape(sub.add_parser("up", parents=[common], help="create the run's machines"))
    r = sub.add_parser(
        "run", parents=[common], help="one headless test on the master (-- LOCUST OPTIONS...)"
    )
    r.add_argument("locustfile")
    r.add_argument("-u", "--users", type=int_between(1, MAX_USERS), required=True)
    r.add_argument(
        "-r", "--spawn-rate", type=float_between(0.001, MAX_SPAWN_RATE, " users/s"), required=True
    )
    r.add_argument("-t", "--run-time", type=run_time, required=True)
    r.add_argument("--web", action="store_true", help="serve the web UI on the master's 8089")
    sub.add_parser("status", parents=[common], help="nodes, states, ages, cost so far")
    f = sub.add_parser("fetch", parents=[common], help="download results to results/<run-id>/")
    f.add_argument("--dest", type=Path)
    d = sub.add_parser("down", parents=[common], help="remove the run (keeps the bucket)")
    d.add_argument("--purge", action="store_true", help="delete the results bucket too")
    s = sub.add_parser("sweep", parents=[common], help="find/remove leftovers of any run")
    s.add_argument("--older-than", default="6h", help="only runs older than this (e.g. 6h)")
    s.add_argument("--yes", action="store_true", help="remove them (default: only list)")
    s.add_argument("--purge", action="store_true", help="delete their buckets too")
    return p


def spec_from(args: argparse.Namespace) -> RunSpec:
    return RunSpec(
        workers=args.workers,
        worker_type=check_instance_type(args.worker_type, "--worker-type"),
        master_type=check_instance_type(args.master_type, "--master-type"),
        server_type=check_instance_type(args.server_type, "--server-type"),
        servers=parse_servers(args.servers),
        spot=args.spot,
        max_lifetime_minutes=parse_lifetime(args.max_lifetime),
        allow_cidr=(
            parse_cidr(args.allow_cidr, wide_ok=args.allow_wide_cidr) if args.allow_cidr else None
        ),
        subnet_id=args.subnet,
    )


def plan_lines(spec: RunSpec, region: str, run_id: str) -> list[str]:
    """Every resource ``up`` would create and the hourly estimate; offline."""
    ports = ", ".join(f"{k} {p}" for k, p in spec.server_ports().items())
    net = (
        [f"  (existing subnet {spec.subnet_id}: no VPC, subnet, gateway or routes created)"]
        if spec.subnet_id
        else [
            f"  VPC {VPC_CIDR}, subnet {SUBNET_CIDR} (public IPs for egress only)",
            "  internet gateway + route table (0.0.0.0/0 → gateway, outbound only)",
        ]
    )
    web = (
        f"{WEB_PORT} from {spec.allow_cidr} (direct web UI)"
        if spec.allow_cidr
        else f"no {WEB_PORT} rule (web UI only through an SSM port forward)"
    )
    lines = [
        f"plan for run {run_id} in {region} (nothing is created by plan)",
        *net,
        "  security group workers: no ingress; egress 443 anywhere, "
        f"{MASTER_PORT} to master, {ports} to servers",
        f"  security group master: {MASTER_PORT} from workers; {web}; egress 443",
        f"  security group servers: {ports} from workers; egress 443",
        "  server node runs: " + "; ".join(SERVER_PROCESSES[k] for k in spec.servers),
        "  IAM role + instance profile: read code tarball, write results/<run-id>/ only, SSM agent",
        "  S3 bucket echoswarm-<account>-<run-id>: private, SSE-S3, TLS only; code tarball"
        " (tracked files + --include; never secret-looking files)",
        f"  every node: AL2023 (SSM public parameter), IMDSv2 required, {prices.ROOT_VOLUME_GB} GiB"
        f" gp3 encrypted, shuts down (= terminates) after {spec.max_lifetime_minutes} min",
        "  tags on everything: echoswarm=true, echoswarm:run=<run-id>, echoswarm:created, Name"
        " (+ echoswarm:role, echoswarm:expires on instances)",
    ]
    rows = [
        ("server", 1, spec.server_type, False),
        ("master", 1, spec.master_type, False),
        ("worker", spec.workers, spec.worker_type, spec.spot),
    ]
    costs = []
    for role, count, itype, spot in rows:
        line = prices.Line(
            f"{role} {itype}{' spot' if spot else ''}",
            count,
            prices.instance_hourly(itype, spot=spot),
        )
        costs.append(line)
        lines.append(f"  {count} × {line.what}: {prices.money(line.hourly)}/h each")
    nodes = spec.workers + 2
    costs.append(prices.Line("public IPv4 + root volume", nodes, prices.node_overhead_hourly()))
    lines.append(f"  {nodes} × public IPv4 + root volume: {prices.money(costs[-1].hourly)}/h each")
    if region != prices.REGION:
        lines.append(f"  (the price table is {prices.REGION}'s; {region} differs somewhat)")
    hourly = prices.total(costs)
    lines.append(
        f"estimated cost: {prices.money(hourly)}/hour; at most "
        f"{prices.money(None if hourly is None else hourly * spec.max_lifetime_minutes / 60)} "
        f"if left to the {spec.max_lifetime_minutes}-min lifetime guard "
        f"(prices of {prices.AS_OF}, {prices.REGION}, estimates; S3/transfer extra, small)"
    )
    return lines


def _older_than(text: str) -> timedelta:
    """``0``, ``90m``, ``6h``, ``2d`` → a timedelta (sweep's threshold)."""
    m = re.fullmatch(r"(\d+)([mhd]?)", text.strip())
    if not m or (m.group(2) == "" and m.group(1) != "0"):
        raise UsageError(f"--older-than {text!r}: expected e.g. 0, 90m, 6h or 2d")
    minutes = int(m.group(1)) * {"m": 1, "h": 60, "d": 1440, "": 0}[m.group(2)]
    if minutes > MAX_OLDER_THAN_DAYS * 1440:
        raise UsageError(f"--older-than {text!r}: at most {MAX_OLDER_THAN_DAYS}d")
    return timedelta(minutes=minutes)


def dispatch(args: argparse.Namespace) -> int:
    if args.run_id:
        check_run_id(args.run_id)
    if args.cmd == "plan":
        spec = spec_from(args)
        include = tarball.check_includes(args.include)
        region = check_region(args.region or DEFAULT_REGION)
        for line in plan_lines(spec, region, args.run_id or "<new>"):
            print(line)
        for line in tarball.describe(tarball.manifest(include)):
            print(f"  {line}")
        return 0
    if args.cmd == "up":
        spec = spec_from(args)
        include = tarball.check_includes(args.include)
        state.load()  # a malformed or unwritable state file stops `up` before AWS is touched
        state.check_writable()
        cloud = Cloud(args.region or DEFAULT_REGION, args.profile)
        run_id = args.run_id or new_run_id()
        from infra import lifecycle

        result = lifecycle.up(cloud, run_id, spec, profile=args.profile, include=include)
        print(run_id)
        progress(f"up: run {run_id} ready ({result['created']} resource(s) created)")
        return 0
    if args.cmd == "sweep":
        from infra import lifecycle

        threshold = _older_than(args.older_than)
        if args.yes:
            state.load()
            state.check_writable()
        cloud = Cloud(args.region or DEFAULT_REGION, args.profile)
        lifecycle.sweep(cloud, threshold, yes=args.yes, purge=args.purge)
        return 0
    prepared = None
    if args.cmd == "run":  # everything about the test that can be checked here, first
        from infra import testrun

        prepared = testrun.prepare(args.locustfile)
    run_id, record = state.recall(args.run_id)
    if not run_id:
        raise UsageError("no run: pass --run-id or start one with `python -m infra up`")
    if args.cmd == "down":
        state.check_writable()
    cloud = Cloud(
        args.region or record.get("region") or DEFAULT_REGION, args.profile or record.get("profile")
    )
    return _on_run(args, cloud, run_id, record, prepared)


def _on_run(
    args: argparse.Namespace,
    cloud: Cloud,
    run_id: str,
    record: dict[str, Any],
    prepared: Any = None,
) -> int:
    from infra import lifecycle, testrun

    if args.cmd == "run":
        return testrun.run(
            cloud,
            run_id,
            prepared,
            users=args.users,
            spawn_rate=args.spawn_rate,
            run_time=args.run_time,
            extra=args.extra,
            record=record,
            web=args.web,
        )
    if args.cmd == "status":
        for line in testrun.status(cloud, run_id):
            print(line)
        return 0
    if args.cmd == "fetch":
        testrun.fetch(cloud, run_id, args.dest)
        return 0
    if args.cmd == "down":
        removed, kept = lifecycle.down(cloud, run_id, purge=args.purge)
        if removed:
            progress(f"down: run {run_id} removed ({removed} resource(s))")
        elif record or kept:
            progress(f"down: run {run_id} was already down (nothing left in {cloud.region})")
        else:
            raise InfraError(
                f"nothing of run {run_id} found in {cloud.region} (wrong --run-id or --region?)"
            )
        return 0
    raise UsageError(f"unknown command {args.cmd}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:  # everything after -- goes to Locust on the master untouched
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    args.extra = extra
    if extra and args.cmd != "run":
        print(f"python -m infra {args.cmd}: unexpected arguments after --", file=sys.stderr)
        return 2
    with interrupt.installed():
        return _guarded(args)


def _guarded(args: argparse.Namespace) -> int:
    """Run the command; every failure becomes one line on stderr and an exit code."""
    where = f"python -m infra {args.cmd}"
    try:
        return dispatch(args)
    except interrupt.Interrupted as e:
        progress(f"{where}: interrupted by {e.name}" + (f"; {e.detail}" if e.detail else ""))
        return e.exit_code
    except UsageError as e:
        progress(f"{where}: {e}")
        return 2
    except InfraError as e:
        progress(f"{where}: {e}")
        return 1
    except botocore.exceptions.ProfileNotFound as e:
        progress(f"{where}: --profile: {e}")
        return 2
    except botocore.exceptions.NoCredentialsError:
        progress(f"{where}: no AWS credentials found")
        return 1
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        progress(f"{where}: {error_text(e)}")
        return 1
    except KeyboardInterrupt:  # signals not installed (not the main thread)
        progress(f"{where}: interrupted")
        return 130
