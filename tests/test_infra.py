"""``python -m infra`` against a local moto server: the whole life of a run, its security
rules, hardening and tags, rollback, idempotency, sweep and the up-front error checks."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from infra import bucket as s3b
from infra import node
from infra.aws import Cloud
from infra.guard import GUARD_MARK, guard_script
from infra.ledger import Ledger
from infra.spec import bucket_name, new_run_id
from tests.infra_fixtures import (
    MotoTls,
    aws,  # noqa: F401  (fixture)
    client,
    fake_systemd,
    infra,
    leftovers,
    live_instances,
    moto_https,  # noqa: F401  (fixture)
    moto_url,  # noqa: F401  (fixture)
    run_with_fake_systemd,
    shipped_code,
    snapshot,
    tag_map,
    tracked_on_disk,
)

pytestmark = pytest.mark.timeout(60)
ACCOUNT = "123456789012"  # moto's
CIDR = "203.0.113.0/24"


def up(*extra: str) -> str:
    r = infra("up", "--workers", "2", "--servers", "tcp,ws", "--max-lifetime", "90m", *extra)
    assert r.rc == 0, r.err
    run_id = r.out.strip().splitlines()[-1]
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", run_id), r.out
    return run_id


def by_role(run_id: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for i in live_instances(run_id):
        out.setdefault(tag_map(i)["echoswarm:role"], []).append(i)
    return out


def _ctrl_c_while_watching_the_master(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first poll of the master's test delivers a SIGINT to this process (the CLI, running
    in-process, has its handler installed by then)."""
    from moto.ssm.models import SimpleSystemManagerBackend

    real = SimpleSystemManagerBackend.get_command_invocation
    sent: list[int] = []

    def ctrl_c(self, command_id, instance_id, plugin_name):  # runs in the moto server's thread
        script = "\n".join(self.get_command_by_id(command_id).parameters["commands"])
        if not sent and "systemctl start echoswarm-master.service" in script:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, command_id, instance_id, plugin_name)

    monkeypatch.setattr(SimpleSystemManagerBackend, "get_command_invocation", ctrl_c)


def test_full_cycle_up_status_run_fetch_down(
    aws: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = up("--allow-cidr", CIDR)
    roles = by_role(run_id)
    assert {k: len(v) for k, v in roles.items()} == {"server": 1, "master": 1, "worker": 2}
    ids = sorted(i["InstanceId"] for v in roles.values() for i in v)
    master_ip = roles["master"][0]["PrivateIpAddress"]
    for w in roles["worker"]:
        ud = client("ec2").describe_instance_attribute(
            InstanceId=w["InstanceId"], Attribute="userData"
        )
        assert f"--master-host {master_ip} " in base64.b64decode(ud["UserData"]["Value"]).decode()

    again = infra(
        "up", "--run-id", run_id, "--workers", "2", "--servers", "tcp,ws", "--allow-cidr", CIDR
    )
    assert again.rc == 0, again.err
    assert "nothing to add" in again.err
    assert sorted(i["InstanceId"] for i in live_instances(run_id)) == ids

    st = infra("status")  # defaults to the last run
    assert st.rc == 0, st.err
    assert f"run {run_id}" in st.out
    for role in ("server", "master", "worker"):
        assert re.search(rf"^\s+{role}\s+i-\w+\s+c7i\.\w+\s+running", st.out, re.M), st.out
    assert "cost so far (estimate" in st.out
    # moto runs no SSM command: the nodes "answer" with nothing, and status says so (the
    # node-reported guard is checked in the hardening test, with the nodes played).
    assert re.search(r"guard of 4 node\(s\) not reported .* tag says 20\d\d-", st.out), st.out

    # Ctrl-C while `run` watches: 130 and one line saying the test goes on (the master owns it).
    _ctrl_c_while_watching_the_master(monkeypatch)
    r = infra("run", "tests/infra_scenario.py", "-u", "4", "-r", "2", "-t", "5s")
    assert r.rc == 130, r.err
    last = r.err.strip().splitlines()[-1]
    assert "interrupted by SIGINT; the test goes on on the master until -t 5s ends" in last

    r = infra("run", "tests/infra_scenario.py", "-u", "4", "-r", "2", "-t", "5s", "--web")
    assert r.rc == 0, r.err
    config = _sent_master_config(run_id)
    assert config["web"] is True
    assert config["web_host"] == "0.0.0.0"  # --allow-cidr asked for direct access too
    master_id = roles["master"][0]["InstanceId"]
    assert f"aws ssm start-session --region ap-northeast-1 --target {master_id}" in r.err
    assert re.search(r"directly: http://[\d.]+:8089 from 203\.0\.113\.0/24 only", r.err), r.err
    server_ip = roles["server"][0]["PrivateIpAddress"]
    assert config["expect_workers"] == 4  # 2 nodes × 2 vCPUs (c7i.large), one process each
    assert config["extra"] == ["--expect-workers-max-wait", "600"]
    assert config["servers"] == [
        {"kind": "tcp", "option": "--tcp-target", "host": server_ip, "port": 7777},
        {"kind": "ws", "option": "--ws-url", "host": server_ip, "port": 8765},
    ]
    bucket = bucket_name(ACCOUNT, run_id)
    assert (config["bucket"], config["prefix"]) == (bucket, f"results/{run_id}/")
    server_script = _sent_commands("echoswarm-server-tcp.service")[-1]  # (one per `run`)
    assert "systemctl restart echoswarm-server-tcp.service" in server_script
    assert _decoded_json(server_script, "/etc/echoswarm/server-tcp.json") == {
        "args": ["--model", "asyncio"]
    }

    # moto does not execute SSM commands: play the master node here — the real run_master
    # (live.json while running, then the whole results directory) against moto's S3.
    config["results_dir"] = str(tmp_path / "node-results")
    writer = (
        "import json, pathlib, sys; d = pathlib.Path(sys.argv[1]); "
        "(d / 'run.json').write_text(json.dumps({'status': 'complete'})); "
        "(d / 'live.json').write_text(json.dumps({'state': 'stopped', 'workers': 4})); "
        "(d / 'histograms').mkdir(); (d / 'histograms' / 'latency.hlog').write_text('x'); "
        "(d / 'summary.csv').write_text('request_type,name,count\\ntcp,msg,10\\n')"
    )
    assert node.run_master(config, [sys.executable, "-c", writer, config["results_dir"]]) == 0

    dest = tmp_path / "fetched"
    f = infra("fetch", "--dest", str(dest))
    assert f.rc == 0, f.err
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == ["histograms/latency.hlog", "live.json", "run.json", "summary.csv"]
    st = infra("status")
    assert "master sees: stopped workers=4" in st.out, st.out
    assert json.loads((dest / "run.json").read_text()) == {"status": "complete"}

    for _ in range(2):  # down is idempotent
        d = infra("down")
        assert d.rc == 0, d.err
        assert leftovers(run_id) == {"buckets": [bucket]}  # results kept without --purge
    assert live_instances(run_id) == []  # pending, running or stopped
    p = infra("down", "--run-id", run_id, "--purge")
    assert p.rc == 0, p.err
    assert leftovers(run_id) == {}


def _sent_commands(marker: str) -> list[str]:
    """Scripts sent by SSM that contain ``marker`` (moto lists every instance as a target of
    every command, so commands are told apart by what they do)."""
    cmds = client("ssm").list_commands()["Commands"]
    scripts = ["\n".join(c["Parameters"]["commands"]) for c in cmds]
    return [s for s in scripts if marker in s]


def _decoded_json(script: str, path: str) -> dict:
    m = re.search(rf"echo (\S+) \| base64 -d > {re.escape(path)}", script)
    assert m, script
    return json.loads(base64.b64decode(m.group(1)))


def _sent_master_config(run_id: str) -> dict:
    """The master config the last ``run`` of ``run_id`` sent (moto keeps every run's commands)."""
    configs = [
        _decoded_json(script, "/etc/echoswarm/master-run.json")
        for script in _sent_commands("systemctl start echoswarm-master.service")
    ]
    mine = [c for c in configs if c["run_id"] == run_id]
    assert mine, configs
    return mine[-1]


def test_security_group_rules_are_exactly_the_intended_set(aws: str) -> None:  # noqa: F811
    run_id = up("--allow-cidr", CIDR)
    ec2 = client("ec2")
    groups = {
        tag_map(g)["Name"].rsplit("-", 1)[1]: g
        for g in ec2.describe_security_groups(
            Filters=[{"Name": "tag:echoswarm:run", "Values": [run_id]}]
        )["SecurityGroups"]
    }
    assert sorted(groups) == ["master", "servers", "workers"]
    gid = {k: g["GroupId"] for k, g in groups.items()}
    name = {v: k for k, v in gid.items()}

    def rules(perms: list[dict]) -> set[tuple]:
        out = set()
        for p in perms:
            for r in p.get("IpRanges", []):
                out.add((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["CidrIp"]))
            for u in p.get("UserIdGroupPairs", []):
                out.add((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), name[u["GroupId"]]))
        return out

    anywhere = ("tcp", 443, 443, "0.0.0.0/0")
    assert rules(groups["workers"]["IpPermissions"]) == set()
    assert rules(groups["workers"]["IpPermissionsEgress"]) == {
        anywhere,
        ("tcp", 5557, 5557, "master"),
        ("tcp", 7777, 7777, "servers"),
        ("tcp", 8765, 8765, "servers"),
    }
    assert rules(groups["master"]["IpPermissions"]) == {
        ("tcp", 5557, 5557, "workers"),
        ("tcp", 8089, 8089, CIDR),
    }
    assert rules(groups["master"]["IpPermissionsEgress"]) == {anywhere}
    assert rules(groups["servers"]["IpPermissions"]) == {
        ("tcp", 7777, 7777, "workers"),
        ("tcp", 8765, 8765, "workers"),
    }
    assert rules(groups["servers"]["IpPermissionsEgress"]) == {anywhere}
    roles = by_role(run_id)
    for role, group in (("master", "master"), ("server", "servers"), ("worker", "workers")):
        for inst in roles[role]:
            assert [g["GroupId"] for g in inst["SecurityGroups"]] == [gid[group]]

    # A second up without --allow-cidr converges: no web UI rule at all, nothing else changed.
    r = infra("up", "--run-id", run_id, "--workers", "2", "--servers", "tcp,ws")
    assert r.rc == 0, r.err
    assert "revoking unintended ingress rule" in r.err
    after = {
        g["GroupId"]: g
        for g in ec2.describe_security_groups(GroupIds=list(gid.values()))["SecurityGroups"]
    }
    assert rules(after[gid["master"]]["IpPermissions"]) == {("tcp", 5557, 5557, "workers")}
    for g in after.values():
        assert all(
            r["CidrIp"] != "0.0.0.0/0" for p in g["IpPermissions"] for r in p.get("IpRanges", [])
        )
    assert rules(after[gid["servers"]]["IpPermissions"]) == rules(
        groups["servers"]["IpPermissions"]
    )
    # Without --allow-cidr the web UI listens on the master's loopback only: reached through
    # an SSM port forward (TLS, the caller's IAM identity), never an open port (item 7).
    r = infra("run", "tests/infra_scenario.py", "-u", "2", "-r", "1", "-t", "5s", "--web")
    assert r.rc == 0, r.err
    assert _sent_master_config(run_id)["web_host"] == "127.0.0.1"
    master_id = by_role(run_id)["master"][0]["InstanceId"]
    assert (
        f"aws ssm start-session --region ap-northeast-1 --target {master_id} "
        "--document-name AWS-StartPortForwardingSession "
        "--parameters portNumber=8089,localPortNumber=8089" in r.err
    ), r.err
    assert "directly" not in r.err and "http://127.0.0.1:8089" in r.err


def _nodes_answer_guard_reports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unguarded: set[str]
) -> None:
    """moto never runs SSM commands: play the nodes for the guard report — the exact script
    ``status`` sent runs here, with systemd's tools stood in (the timer: 90 min left; on the
    ``unguarded`` nodes: no timer)."""
    from moto.ssm.models import Command

    real = Command.invocation_response
    bin_dir = fake_systemd(tmp_path / "fake-systemd")

    def answer(self, instance_id, plugin_name):  # runs in the moto server's thread
        resp = real(self, instance_id, plugin_name)
        script = "\n".join(self.parameters.get("commands", []))
        if GUARD_MARK in script:
            timer = "inactive" if instance_id in unguarded else "active"
            r = run_with_fake_systemd(
                script, bin_dir, tmp_path / "guard.log", left_s="5400", timer=timer
            )
            resp["StandardOutputContent"] = r.stdout
        return resp

    monkeypatch.setattr(Command, "invocation_response", answer)


def test_hardening_lifetime_and_tags_on_every_resource(
    aws: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    run_id = up("--spot")
    ec2, iam, s3 = client("ec2"), client("iam"), client("s3")
    insts = live_instances(run_id)
    assert len(insts) == 4
    for i in insts:
        iid = i["InstanceId"]
        assert i["MetadataOptions"]["HttpTokens"] == "required"
        assert i["MetadataOptions"]["HttpEndpoint"] == "enabled"
        behaviour = ec2.describe_instance_attribute(
            InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior"
        )["InstanceInitiatedShutdownBehavior"]["Value"]
        assert behaviour == "terminate"
        ud = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]
        doc = json.loads(base64.b64decode(ud["Value"]).decode().split("\n", 1)[1])
        t = tag_map(i)
        expires = datetime.strptime(t["echoswarm:expires"], "%Y-%m-%dT%H:%M:%SZ")
        deadline = int(expires.replace(tzinfo=UTC).timestamp())
        assert doc["bootcmd"] == [["sh", "-c", guard_script(90, deadline)]]  # tag = guard
        assert t["echoswarm"] == "true" and t["echoswarm:run"] == run_id
        assert "echoswarm:expires" in t
        assert (i.get("InstanceLifecycle") == "spot") == (t["echoswarm:role"] == "worker")
    # moto associates the profile with the first instance of each launch only (a moto gap):
    # every association there is must name the run's profile, one per launch batch.
    assoc = ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [i["InstanceId"] for i in insts]}]
    )["IamInstanceProfileAssociations"]
    profiles = [a["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1] for a in assoc]
    assert profiles == [f"echoswarm-{run_id}-node"] * 3
    f = [{"Name": "tag:echoswarm:run", "Values": [run_id]}]
    tagged = {
        "vpc": ec2.describe_vpcs(Filters=f)["Vpcs"],
        "subnet": ec2.describe_subnets(Filters=f)["Subnets"],
        "igw": ec2.describe_internet_gateways(Filters=f)["InternetGateways"],
        "routes": ec2.describe_route_tables(Filters=f)["RouteTables"],
        "groups": ec2.describe_security_groups(Filters=f)["SecurityGroups"],
        "volumes": ec2.describe_volumes(Filters=f)["Volumes"],
    }
    assert {k: len(v) for k, v in tagged.items()} == {
        "vpc": 1,
        "subnet": 1,
        "igw": 1,
        "routes": 1,
        "groups": 3,
        "volumes": 4,
    }
    role = f"echoswarm-{run_id}-node"
    for tagset in (
        iam.list_role_tags(RoleName=role)["Tags"],
        iam.get_instance_profile(InstanceProfileName=role)["InstanceProfile"]["Tags"],
        s3.get_bucket_tagging(Bucket=bucket_name(ACCOUNT, run_id))["TagSet"],
    ):
        t = {x["Key"]: x["Value"] for x in tagset}
        assert t["echoswarm"] == "true" and t["echoswarm:run"] == run_id

    policy = iam.get_role_policy(RoleName=role, PolicyName="echoswarm-node")["PolicyDocument"]
    s3_statements = {
        tuple(s["Action"]): s["Resource"]
        for s in policy["Statement"]
        if s["Sid"] != "SsmAgentForRunCommand"
    }
    bucket = bucket_name(ACCOUNT, run_id)
    assert s3_statements == {
        ("s3:GetObject",): [f"arn:aws:s3:::{bucket}/code/{run_id}.tar.gz"],
        ("s3:PutObject",): [f"arn:aws:s3:::{bucket}/results/{run_id}/*"],
    }
    enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    # The code tarball: tracked files only, each listed in VERSION.json (issue 11, item 2).
    members, version, metadata = shipped_code(run_id)
    assert set(members) == tracked_on_disk() == set(version["files"])
    assert metadata["files"] == str(len(members))

    # status reports each node's own guard, as its PID 1 tells it (issue 11, item 5).
    unguarded = next(i["InstanceId"] for i in insts if tag_map(i)["echoswarm:role"] == "worker")
    _nodes_answer_guard_reports(monkeypatch, tmp_path, {unguarded})
    st = infra("status")
    assert st.rc == 0, st.err
    node_lines = [
        ln for ln in st.out.splitlines() if re.match(r"\s+(server|master|worker)\s+i-", ln)
    ]
    assert len(node_lines) == 4, st.out
    for line in node_lines:
        if unguarded in line:
            assert line.endswith("guard: NONE, timer inactive"), line
        else:
            assert re.search(r"guard: ends \d\d:\d\d:\d\dZ \(in (89|90) min\)$", line), line
    assert f"WARNING: no active lifetime guard on {unguarded}" in st.out
    assert "first node ends itself at 20" in st.out and "not reported" not in st.out
    assert infra("down", "--purge").rc == 0
    assert leftovers(run_id) == {}


def test_existing_subnet_is_used_and_left_alone(aws: str) -> None:  # noqa: F811
    ec2 = client("ec2")
    subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
        "Subnets"
    ][0]
    r = infra("up", "--workers", "1", "--subnet", subnet["SubnetId"])
    assert r.rc == 0, r.err
    run_id = r.out.strip().splitlines()[-1]
    left = leftovers(run_id)
    assert "vpcs" not in left and "subnets" not in left and "igws" not in left
    assert {i["SubnetId"] for i in live_instances(run_id)} == {subnet["SubnetId"]}
    assert infra("down", "--purge").rc == 0
    assert leftovers(run_id) == {}
    assert ec2.describe_subnets(SubnetIds=[subnet["SubnetId"]])["Subnets"]  # still there
    before = snapshot()
    bad = infra("up", "--subnet", "subnet-00000000000000000")
    assert bad.rc == 1 and "no such subnet" in bad.err.strip().splitlines()[-1], bad.err
    assert snapshot() == before  # refused before anything was created


def test_reup_secures_a_bucket_left_bare_or_refuses_a_foreign_one(aws: str) -> None:  # noqa: F811
    """A bucket an interrupted ``up`` left without its protections is taken over only after
    each one is applied and read back; one tagged for another run is refused with one line."""
    s3 = client("s3")
    where = {"LocationConstraint": "ap-northeast-1"}
    run_id = new_run_id()
    bucket = bucket_name(ACCOUNT, run_id)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration=where)  # what a killed up leaves
    r = infra("up", "--run-id", run_id, "--workers", "1", "--servers", "tcp")
    assert r.rc == 0, r.err
    assert f"reusing bucket s3://{bucket}" in r.err
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(block, True) and len(block) == 4
    enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    owner = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]
    assert owner["Rules"][0]["ObjectOwnership"] == "BucketOwnerEnforced"
    tagset = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    assert tag_map({"Tags": tagset})["echoswarm:run"] == run_id
    assert infra("down", "--purge").rc == 0
    assert leftovers(run_id) == {}

    other = new_run_id()
    foreign = bucket_name(ACCOUNT, other)
    s3.create_bucket(Bucket=foreign, CreateBucketConfiguration=where)
    s3.put_bucket_tagging(
        Bucket=foreign, Tagging={"TagSet": [{"Key": "echoswarm:run", "Value": "someone-else"}]}
    )
    before = snapshot()
    try:
        r = infra("up", "--run-id", other, "--workers", "1", "--servers", "tcp")
        assert r.rc == 1
        last = r.err.strip().splitlines()[-1]
        assert foreign in last and "refused" in last, r.err
        assert snapshot() == before
        with pytest.raises(ClientError):  # left exactly as it was: no protections added
            s3.get_public_access_block(Bucket=foreign)
    finally:
        s3.delete_bucket(Bucket=foreign)


def test_over_tls_a_reused_bucket_gets_the_tls_only_policy_and_it_is_checked(
    aws: str,  # noqa: F811
    moto_https: MotoTls,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The TLS-only policy is applied only over https (moto, ignoring the policy's condition,
    would then refuse every object call: so this stays at the bucket level)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_https.url)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(moto_https.ca_bundle))
    cloud = Cloud("ap-northeast-1")
    run_id = new_run_id()
    bucket = bucket_name(ACCOUNT, run_id)
    s3 = cloud.s3
    assert s3.meta.endpoint_url.startswith("https://127.0.0.1:")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": cloud.region})
    try:
        s3b.ensure_bucket(cloud, bucket, run_id, Ledger())
        (statement,) = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert s3b.check_protections(cloud, bucket, run_id, tls_policy=True) == []
        s3.delete_bucket_policy(Bucket=bucket)  # the check does notice a missing protection
        s3.delete_public_access_block(Bucket=bucket)
        assert s3b.check_protections(cloud, bucket, run_id, tls_policy=True) == [
            "public access not fully blocked",
            "no TLS-only policy",
        ]
    finally:
        s3b.purge_bucket(cloud, bucket)


def _ipv6_rules(run_id: str) -> list[tuple[str, str, str]]:
    """(group name, direction, IPv6 CIDR) of every IPv6 rule in the run's groups."""
    out = []
    groups = client("ec2").describe_security_groups(
        Filters=[{"Name": "tag:echoswarm:run", "Values": [run_id]}]
    )["SecurityGroups"]
    for g in groups:
        for direction in ("IpPermissions", "IpPermissionsEgress"):
            for p in g[direction]:
                out += [(g["GroupName"], direction, r["CidrIpv6"]) for r in p.get("Ipv6Ranges", [])]
    return out


def test_ipv6_rules_are_revoked_in_a_dual_stack_subnet_and_on_reup(aws: str) -> None:  # noqa: F811
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.88.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]
    subnet = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.88.1.0/24")["Subnet"]
    try:
        r = infra("up", "--workers", "1", "--servers", "tcp", "--subnet", subnet["SubnetId"])
        assert r.rc == 0, r.err
        run_id = r.out.strip().splitlines()[-1]
        assert _ipv6_rules(run_id) == []  # AWS's default egress to ::/0 is gone too
        groups = {
            tag_map(g)["Name"].rsplit("-", 1)[1]: g["GroupId"]
            for g in ec2.describe_security_groups(
                Filters=[{"Name": "tag:echoswarm:run", "Values": [run_id]}]
            )["SecurityGroups"]
        }
        open_v6 = {"IpProtocol": "tcp", "FromPort": 8089, "ToPort": 8089}
        ec2.authorize_security_group_ingress(
            GroupId=groups["master"],
            IpPermissions=[{**open_v6, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}],
        )
        ec2.authorize_security_group_egress(
            GroupId=groups["workers"],
            IpPermissions=[{"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}],
        )
        assert len(_ipv6_rules(run_id)) == 2
        again = infra(
            "up", "--run-id", run_id, "--workers", "1", "--servers", "tcp",
            "--subnet", subnet["SubnetId"],
        )  # fmt: skip
        assert again.rc == 0, again.err
        assert "revoking unintended ingress rule ('tcp', 8089, 8089, '::/0')" in again.err
        assert _ipv6_rules(run_id) == []
        assert infra("down", "--purge").rc == 0
        assert leftovers(run_id) == {}
    finally:
        ec2.delete_subnet(SubnetId=subnet["SubnetId"])
        ec2.delete_vpc(VpcId=vpc["VpcId"])
