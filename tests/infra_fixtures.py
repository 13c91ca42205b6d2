"""Fixtures for the infra tests: a moto server on a loopback port (EC2 instance-type and AMI
validation on), the environment that points boto3 at it, and an in-process CLI runner.

Nothing here can reach real AWS: the endpoint is always the local moto server and the
credentials are fake.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra import cli
from infra.spec import bucket_name
from infra.tarball import ROOT

REGION = "ap-northeast-1"
VALIDATION_ENV = {
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
    "MOTO_ENABLE_AMI_VALIDATION": "true",
}


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One moto server for the session (started once: ~1 s); reset before each test."""
    os.environ.update(VALIDATION_ENV)  # moto reads these when it is imported ...
    from moto import settings
    from moto.server import ThreadedMotoServer

    # ... so set them on its settings too, in case something imported moto earlier.
    settings.EC2_ENABLE_INSTANCE_TYPE_VALIDATION = True
    settings.ENABLE_AMI_VALIDATION = True
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def moto_https(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoTls]:
    """The same moto backends (they live in this process) behind a second, TLS listener with a
    throwaway self-signed certificate for 127.0.0.1: what S3's TLS-only policy needs."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    cert, key = _self_signed(tmp_path_factory.mktemp("moto-tls"))
    server = make_server(
        "127.0.0.1",
        0,
        DomainDispatcherApplication(create_backend_app),
        threaded=True,
        request_handler=MotoRequestHandler,
        ssl_context=(str(cert), str(key)),
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield MotoTls(f"https://127.0.0.1:{server.server_address[1]}", cert)
    server.shutdown()
    thread.join(10)


@dataclass
class MotoTls:
    url: str
    ca_bundle: Path


def _self_signed(where: Path) -> tuple[Path, Path]:
    """A one-day certificate for 127.0.0.1 that is its own trust anchor (tests only)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moto test 127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = where / "cert.pem", where / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every HTTP request botocore sends from this process must go to 127.0.0.1 (the ``aws``
    fixture includes this)."""
    _only_loopback(monkeypatch)


def _only_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that lost its endpoint fails here instead of reaching real AWS (child processes
    inherit the loopback AWS_ENDPOINT_URL)."""
    import urllib.parse

    import botocore.httpsession

    real = botocore.httpsession.URLLib3Session.send

    def send(self: Any, request: Any) -> Any:
        host = urllib.parse.urlsplit(request.url).hostname
        if host != "127.0.0.1":
            raise AssertionError(f"a test tried to reach {request.url}: only 127.0.0.1 is allowed")
        return real(self, request)

    monkeypatch.setattr(botocore.httpsession.URLLib3Session, "send", send)


@pytest.fixture
def aws(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Environment for boto3 → the moto server, fake credentials, a private state file.

    The server is NOT reset between tests (a reset makes moto reload its AMI and instance-type
    catalogues, seconds each time): every test works on its own run id and checks by tag.
    """
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("ECHOSWARM_STATE_FILE", str(tmp_path / "state.json"))
    _only_loopback(monkeypatch)
    return moto_url


@dataclass
class Result:
    rc: int
    out: str
    err: str


def infra(*argv: str) -> Result:
    """``python -m infra ARGV`` in-process (fast: no interpreter start per command)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(list(argv))
        except SystemExit as e:  # argparse usage errors
            rc = int(e.code or 0)
    return Result(rc, out.getvalue(), err.getvalue())


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def tag_map(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def run_filter(run_id: str) -> list[dict[str, Any]]:
    return [{"Name": "tag:echoswarm:run", "Values": [run_id]}]


def live_instances(run_id: str) -> list[dict[str, Any]]:
    resp = client("ec2").describe_instances(
        Filters=[
            *run_filter(run_id),
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]},
        ]
    )
    return [i for r in resp["Reservations"] for i in r["Instances"]]


def snapshot() -> set[str]:
    """Ids of every VPC, subnet, group, instance (not terminated), role and bucket there is."""
    ec2, iam, s3 = client("ec2"), client("iam"), client("s3")
    ids = {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]}
    ids |= {s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]}
    ids |= {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    ids |= {
        i["InstanceId"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    }
    ids |= {r["RoleName"] for r in iam.list_roles()["Roles"]}
    ids |= {b["Name"] for b in s3.list_buckets()["Buckets"]}
    return ids


def leftovers(run_id: str) -> dict[str, list[str]]:
    """Everything of the run that still exists (instances not terminated, network, IAM, S3)."""
    ec2, iam, s3 = client("ec2"), client("iam"), client("s3")
    f = run_filter(run_id)
    left = {
        "instances": [i["InstanceId"] for i in live_instances(run_id)],
        "groups": [g["GroupId"] for g in ec2.describe_security_groups(Filters=f)["SecurityGroups"]],
        "subnets": [s["SubnetId"] for s in ec2.describe_subnets(Filters=f)["Subnets"]],
        "vpcs": [v["VpcId"] for v in ec2.describe_vpcs(Filters=f)["Vpcs"]],
        "igws": [
            g["InternetGatewayId"]
            for g in ec2.describe_internet_gateways(Filters=f)["InternetGateways"]
        ],
        "route_tables": [
            r["RouteTableId"] for r in ec2.describe_route_tables(Filters=f)["RouteTables"]
        ],
        "roles": [r["RoleName"] for r in iam.list_roles()["Roles"] if run_id in r["RoleName"]],
        "profiles": [
            p["InstanceProfileName"]
            for p in iam.list_instance_profiles()["InstanceProfiles"]
            if run_id in p["InstanceProfileName"]
        ],
        "buckets": [b["Name"] for b in s3.list_buckets()["Buckets"] if run_id in b["Name"]],
    }
    return {k: v for k, v in left.items() if v}


def tar_members(blob: bytes) -> dict[str, bytes]:
    """{name: content} of a gzipped tarball; every member must be anonymous (no local user)."""
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        out = {}
        for m in tar.getmembers():
            assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", ""), m.name
            f = tar.extractfile(m)
            out[m.name] = f.read() if f else b""
        return out


def shipped_code(run_id: str) -> tuple[dict[str, bytes], dict[str, Any], dict[str, str]]:
    """(members, VERSION.json, object metadata) of the run's code tarball in (moto's) S3."""
    obj = client("s3").get_object(
        Bucket=bucket_name("123456789012", run_id), Key=f"code/{run_id}.tar.gz"
    )
    members = tar_members(obj["Body"].read())
    return members, json.loads(members.pop("VERSION.json")), obj["Metadata"]


def tracked_on_disk() -> set[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return {t for t in out.split("\0") if t and (ROOT / t).is_file()}


FAKE_SYSTEMD = {
    # Each records its argv, then acts as FAKE_* say: enough of PID 1's tools for the guard's
    # shell scripts to run here (the scripts are what is tested, not systemd).
    "systemd-run": 'echo "systemd-run $*" >> "$FAKE_LOG"; exit "${FAKE_RUN_RC:-0}"',
    "systemctl": (
        'echo "systemctl $*" >> "$FAKE_LOG"\n'
        'case "$1" in is-active)\n'
        '  [ "$2" = --quiet ] || echo "${FAKE_TIMER:-active}"\n'
        '  [ "${FAKE_TIMER:-active}" = active ];;\n'
        "*) exit 0;; esac"
    ),
    "busctl": (
        '[ "${FAKE_TIMER:-active}" = active ] || exit 1\n'
        'awk -v left="$FAKE_LEFT_S" \'{printf "t %.0f\\n", ($1 + left) * 1000000}\' /proc/uptime'
    ),
}


def fake_systemd(where: Path) -> Path:
    """A directory of stand-ins for systemd-run, systemctl and busctl (put it first on PATH)."""
    where.mkdir(parents=True, exist_ok=True)
    for name, body in FAKE_SYSTEMD.items():
        (where / name).write_text("#!/bin/sh\n" + body + "\n")
        (where / name).chmod(0o755)
    return where


def run_with_fake_systemd(
    script: str, bin_dir: Path, log: Path, **fake: str
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "FAKE_LOG": str(log)}
    env.update({f"FAKE_{k.upper()}": v for k, v in fake.items()})
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=20)
