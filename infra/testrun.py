"""``run``, ``status`` and ``fetch``: one headless test on the run's master (SSM Run Command
starting the master's unit), what the run looks like now, and its results brought home."""

from __future__ import annotations

import base64
import json
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from echoswarm.orchestrate.scenario import ScenarioError, read_servers
from infra import bucket as s3b
from infra import instances, prices
from infra.aws import Cloud, error_code, error_text, ignore_missing, poll, progress
from infra.guard import GUARD_REPORT, Guard, parse_guard
from infra.interrupt import Interrupted
from infra.spec import WEB_PORT, InfraError, UsageError, bucket_name, results_prefix
from infra.userdata import MASTER_CONFIG, MASTER_UNIT, server_config_path, server_unit_name

ROOT = Path(__file__).resolve().parent.parent
NODE_RESULTS = "/var/lib/echoswarm/results"
TERMINAL = {"Success", "Failed", "Cancelled", "TimedOut", "DeliveryTimedOut", "Undeliverable"}
WORKERS_MAX_WAIT_S = 600  # worker nodes still installing when the test starts
SSM_READY_TIMEOUT = 900.0  # a fresh node installs Python and the requirements first
GUARD_TIMEOUT = 30.0  # status waits this long for the nodes' guard reports
TIMESPAN_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def timespan_seconds(text: str) -> int:
    """Locust's ``-t`` syntax (``90``, ``30s``, ``1m30s``, ``2h``) → seconds."""
    m = TIMESPAN_RE.match(text.strip())
    if not text.strip() or not m:
        raise UsageError(f"-t {text!r}: expected e.g. 60s, 5m or 1h30m")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def declared_servers(locustfile: Path) -> list[dict[str, Any]]:
    """The servers the locustfile declares (read by :mod:`echoswarm.orchestrate.scenario`, never
    imported).

    On EC2 each kind has one fixed port on the server node, so a kind may appear once.
    """
    try:
        specs = read_servers(locustfile)
    except ScenarioError as e:
        raise UsageError(str(e)) from None
    kinds = [s.kind for s in specs]
    repeated = sorted({k for k in kinds if kinds.count(k) > 1})
    if repeated:
        raise UsageError(
            f"{locustfile}: declares {', '.join(repeated)} more than once; on EC2 the server "
            "node runs one server per kind"
        )
    return [{"kind": s.kind, "option": s.option, "args": list(s.args)} for s in specs]


def _shell_write(path: str, data: dict[str, Any]) -> str:
    """A shell line writing ``data`` as JSON to ``path`` (base64: no quoting pitfalls)."""
    b64 = base64.b64encode(json.dumps(data).encode()).decode()
    return f"echo {b64} | base64 -d > {shlex.quote(path)}"


def _send(cloud: Cloud, instance_id: str, commands: list[str], timeout_s: int, what: str) -> str:
    """Send a shell script by SSM, retrying while the node's agent is not registered yet."""
    params = {"commands": commands, "executionTimeout": [str(timeout_s)]}
    sent: dict[str, str] = {}

    def attempt() -> tuple[bool, str]:
        try:
            resp = cloud.ssm.send_command(
                InstanceIds=[instance_id],
                DocumentName="AWS-RunShellScript",
                Comment=what[:100],
                Parameters=params,
                TimeoutSeconds=600,
            )
        except Exception as e:
            if error_code(e) == "InvalidInstanceId":
                return False, "node still bootstrapping (SSM agent not registered)"
            raise
        sent["id"] = resp["Command"]["CommandId"]
        return True, "sent"

    poll(f"{what} on {instance_id}", attempt, timeout=SSM_READY_TIMEOUT, interval=15)
    return sent["id"]


def _wait_command(
    cloud: Cloud, command_id: str, instance_id: str, what: str, timeout: float, live: Any = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def check() -> tuple[bool, str]:
        inv = ignore_missing(
            cloud.ssm.get_command_invocation,
            CommandId=command_id,
            InstanceId=instance_id,
            codes=("InvocationDoesNotExist",),
        )
        status = inv["Status"] if inv else "Pending"
        out.update(inv or {})
        extra = live() if live else ""
        return status in TERMINAL, status + (f" · {extra}" if extra else "")

    poll(what, check, timeout=timeout, interval=10)
    return out


def live_line(cloud: Cloud, bucket: str, run_id: str) -> str:
    """A one-line digest of the master's live.json in S3 ("" when there is none)."""
    try:
        body = cloud.s3.get_object(Bucket=bucket, Key=results_prefix(run_id) + "live.json")
        live = json.loads(body["Body"].read())
    except Exception:
        return ""
    parts = [str(live.get("state", "?"))]
    if isinstance(live.get("elapsed_s"), (int, float)):
        parts.append(f"{live['elapsed_s']:.0f} s")
    for key in ("workers", "users", "count", "failures"):
        if key in live:
            parts.append(f"{key}={live[key]}")
    if isinstance(live.get("rps"), (int, float)):
        parts.append(f"{live['rps']:.0f} msg/s")
    return " ".join(parts)


def _locust_workers(cloud: Cloud, workers: list[instances.Node]) -> int:
    """Locust worker processes to expect: each node runs one per vCPU (``--processes auto``)."""
    types = sorted({n.instance_type for n in workers})
    resp = cloud.ec2.describe_instance_types(InstanceTypes=types)["InstanceTypes"]
    vcpus = {t["InstanceType"]: int(t["VCpuInfo"]["DefaultVCpus"]) for t in resp}
    return sum(max(1, vcpus.get(n.instance_type, 1)) for n in workers)


@dataclass(frozen=True)
class Prepared:
    """A test's locustfile, checked locally (before any AWS call): path and declared servers."""

    path: Path
    servers: list[dict[str, Any]]


def prepare(locustfile: str) -> Prepared:
    path = (ROOT / locustfile).resolve()
    if not path.is_file() or ROOT not in path.parents:
        raise UsageError(f"{locustfile}: no such locustfile inside the repository")
    return Prepared(path, declared_servers(path))


def run(
    cloud: Cloud,
    run_id: str,
    test: Prepared,
    *,
    users: int,
    spawn_rate: float,
    run_time: str,
    extra: list[str],
    record: dict[str, Any],
    web: bool = False,
) -> int:
    """Configure the servers the scenario declares, start the master's unit, wait, report."""
    path, wanted = test.path, test.servers
    locustfile = path.relative_to(ROOT).as_posix()
    seconds = timespan_seconds(run_time)
    ns = instances.nodes(cloud, run_id, ["running"])
    master = next((n for n in ns if n.role == "master"), None)
    server = next((n for n in ns if n.role == "server"), None)
    workers = [n for n in ns if n.role == "worker"]
    if master is None or not workers:
        raise InfraError(f"run {run_id} has no running master/workers (did `up` finish?)")
    kinds = set(record.get("spec", {}).get("servers", ["grpc", "ws", "tcp"]))
    missing = [s["kind"] for s in wanted if s["kind"] not in kinds]
    if wanted and (server is None or missing):
        raise InfraError(f"{locustfile} needs servers {missing or wanted} this run does not have")
    from echoswarm.orchestrate.commands import DEFAULT_SERVER_PORTS

    if wanted and server is not None:
        cmds = []
        for s in wanted:
            cmds.append(_shell_write(server_config_path(s["kind"]), {"args": s.get("args", [])}))
            cmds.append(f"systemctl restart {server_unit_name(s['kind'])}")
        cid = _send(cloud, server.instance_id, cmds, 120, "configure servers")
        inv = _wait_command(cloud, cid, server.instance_id, "configure servers", 300)
        if inv.get("Status") != "Success":
            raise InfraError(f"configuring the servers failed: {inv.get('StandardErrorContent')}")
    bucket = bucket_name(cloud.account, run_id)
    direct_cidr = record.get("spec", {}).get("allow_cidr") or None
    config = {
        "run_id": run_id,
        "locustfile": path.relative_to(ROOT).as_posix(),
        "users": users,
        "spawn_rate": spawn_rate,
        "run_time": run_time,
        "expect_workers": _locust_workers(cloud, workers),
        "bind_host": "0.0.0.0",
        "bind_port": 5557,
        "servers": [
            {
                "kind": s["kind"],
                "option": s["option"],
                "host": server.private_ip if server else "",
                "port": DEFAULT_SERVER_PORTS[s["kind"]],
            }
            for s in wanted
        ],
        # A worker node that never comes up must fail the test, not hang it.
        "extra": ["--expect-workers-max-wait", str(WORKERS_MAX_WAIT_S), *extra],
        "web": web,
        # The UI listens on the master's loopback (reached through an SSM port forward) unless
        # `up --allow-cidr` asked for direct access from those addresses too.
        "web_host": "0.0.0.0" if direct_cidr else "127.0.0.1",
        "results_dir": f"{NODE_RESULTS}/{run_id}",
        "bucket": bucket,
        "prefix": results_prefix(run_id),
        "region": cloud.region,
    }
    script = [
        "install -d -m 0755 /etc/echoswarm",
        _shell_write(MASTER_CONFIG, config),
        f"systemctl start {MASTER_UNIT}; rc=$?",
        f"journalctl -u {MASTER_UNIT} -n 40 --no-pager -o cat",
        "exit $rc",
    ]
    if web:
        for line in web_lines(cloud.region, master, direct_cidr):
            progress(line)
    budget = seconds + 600  # spawn, workers reconnecting after the last test, the upload
    progress(f"run {run_id}: {locustfile} -u {users} -r {spawn_rate:g} -t {run_time}")
    cid = _send(cloud, master.instance_id, script, budget, "start the test")
    try:
        inv = _wait_command(
            cloud,
            cid,
            master.instance_id,
            "test",
            budget + 120,
            live=lambda: live_line(cloud, bucket, run_id),
        )
    except Interrupted as e:  # only the watching stops: the test is the master's
        raise Interrupted(
            e.signum,
            f"the test goes on on the master until -t {run_time} ends; "
            "`python -m infra status` watches it, `python -m infra fetch` gets the results",
        ) from None
    tail = (inv.get("StandardOutputContent") or "").strip().splitlines()[-5:]
    for line in tail:
        progress(f"  master: {line}")
    if inv.get("Status") != "Success":
        code = int(inv.get("ResponseCode", 3) or 3)
        progress(f"test ended {inv.get('Status')} (exit {code})")
        return code if code > 0 else 3
    print(f"results: s3://{bucket}/{results_prefix(run_id)} — `python -m infra fetch` next")
    return 0


def web_lines(region: str, master: instances.Node, direct_cidr: str | None) -> list[str]:
    """How to open the web UI: an SSM port forward (always), and directly if allowed."""
    forward = (
        f"aws ssm start-session --region {region} --target {master.instance_id} "
        "--document-name AWS-StartPortForwardingSession "
        f"--parameters portNumber={WEB_PORT},localPortNumber={WEB_PORT}"
    )
    lines = [
        f"web UI: in another terminal run   {forward}",
        f"        then open http://127.0.0.1:{WEB_PORT}  (SSM's tunnel: TLS, your IAM identity;"
        " needs the session-manager-plugin)",
    ]
    if direct_cidr:
        host = master.public_ip or master.private_ip
        lines.append(
            f"        or directly: http://{host}:{WEB_PORT} from {direct_cidr} only"
            " (plain HTTP, no login)"
        )
    return lines


def node_guards(cloud: Cloud, ns: list[instances.Node]) -> dict[str, Guard]:
    """Ask each node (SSM Run Command) for its guard; a node that does not answer in time has
    a Guard with a note saying why."""
    params = {"commands": [GUARD_REPORT], "executionTimeout": ["20"]}
    sent: dict[str, str] = {}
    out: dict[str, Guard] = {}
    for n in ns:
        try:
            resp = cloud.ssm.send_command(
                InstanceIds=[n.instance_id],
                DocumentName="AWS-RunShellScript",
                Comment="echoswarm: lifetime guard report",
                Parameters=params,
                TimeoutSeconds=30,
            )
            sent[n.instance_id] = resp["Command"]["CommandId"]
        except Exception as e:
            if error_code(e) != "InvalidInstanceId":
                raise
            out[n.instance_id] = Guard(False, note="no answer: SSM agent not registered yet")
    answers: dict[str, dict[str, Any]] = {}

    def check() -> tuple[bool, str]:
        for iid, cid in sent.items():
            if iid not in answers:
                inv = ignore_missing(
                    cloud.ssm.get_command_invocation,
                    CommandId=cid,
                    InstanceId=iid,
                    codes=("InvocationDoesNotExist",),
                )
                if inv and inv["Status"] in TERMINAL:
                    answers[iid] = inv
        return len(answers) == len(sent), f"{len(answers)}/{len(sent)} node(s) answered"

    try:
        poll("lifetime guards", check, timeout=GUARD_TIMEOUT, interval=2)
    except InfraError:
        pass  # those that did not answer are reported as such
    for iid in sent:
        inv = answers.get(iid)
        guard = parse_guard((inv or {}).get("StandardOutputContent") or "")
        if not guard.answered:
            why = f"SSM {inv['Status']} but no report" if inv else "no answer in time"
            guard = Guard(False, note=why)
        out[iid] = guard
    return out


def _guard_text(g: Guard | None, now: datetime) -> str:
    if g is None:
        return ""
    if g.ends is not None:
        return (
            f"  guard: ends {g.ends:%H:%M:%SZ} (in {(g.ends - now).total_seconds() / 60:.0f} min)"
        )
    return f"  guard: {'NONE, ' if g.answered and not g.active else ''}{g.note}"


def status(cloud: Cloud, run_id: str) -> list[str]:
    """Lines: one per node (role, id, type, state, age, cost so far, its own lifetime guard)
    and the totals."""
    now = datetime.now(UTC)
    ns = instances.nodes(cloud, run_id)
    live = [n for n in ns if n.state in ("pending", "running")]
    guards = node_guards(cloud, [n for n in live if n.state == "running"])
    lines = [f"run {run_id} in {cloud.region}: {len(ns)} instance(s)"]
    total = 0.0
    for n in ns:
        cost = n.cost_so_far(now) if n.state != "terminated" else None
        total += cost or 0.0
        age_min = (now - n.launched).total_seconds() / 60
        lines.append(
            f"  {n.role:<7} {n.instance_id:<20} {n.instance_type:<11} {n.state:<13} "
            f"{n.private_ip:<15} {age_min:6.0f} min  {prices.money(cost)}"
            + (" spot" if n.spot else "")
            + _guard_text(guards.get(n.instance_id), now)
        )
    ends = [g.ends for g in guards.values() if g.ends is not None]
    unguarded = [iid for iid, g in guards.items() if g.answered and not g.active]
    silent = [iid for iid, g in guards.items() if not g.answered]
    if ends:
        lines.append(
            "  lifetime guard (each node's own systemd timer): first node ends itself at "
            f"{min(ends):%Y-%m-%dT%H:%M:%SZ}"
        )
    if unguarded:
        lines.append(f"  WARNING: no active lifetime guard on {', '.join(unguarded)}")
    if silent:
        tag = min((n.expires for n in live if n.instance_id in silent and n.expires), default="?")
        lines.append(
            f"  lifetime guard of {len(silent)} node(s) not reported (see their lines); "
            f"their echoswarm:expires tag says {tag}"
        )
    seen = live_line(cloud, bucket_name(cloud.account, run_id), run_id)
    lines.append(f"  master sees: {seen or 'no test running (no live.json yet)'}")
    lines.append(f"  cost so far (estimate, prices of {prices.AS_OF}): ${total:.4f}")
    return lines


def fetch(cloud: Cloud, run_id: str, dest: Path | None) -> Path:
    target = dest or ROOT / "results" / run_id
    bucket = bucket_name(cloud.account, run_id)
    try:
        n = s3b.download_results(cloud, bucket, run_id, target)
    except InfraError:
        raise
    except Exception as e:
        raise InfraError(f"fetch from s3://{bucket}: {error_text(e)}") from None
    if n == 0:
        raise InfraError(f"no results in s3://{bucket}/{results_prefix(run_id)} yet")
    progress(f"fetched {n} file(s) to {target}")
    print(f"python -m analysis report {target}")
    return target
