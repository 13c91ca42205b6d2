"""The run's S3 bucket (private, encrypted, TLS-only), the code tarball, and results transfer.

The tarball is the local WORKING TREE as git sees it — tracked files as they are on disk plus
untracked files that are not ignored — so uncommitted edits are what the nodes run; a
``VERSION.json`` inside (and the object's metadata) records HEAD's commit and which files differ
from it.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from infra.aws import Cloud, error_code, ignore_missing, progress
from infra.ledger import Ledger
from infra.spec import InfraError, code_key, results_prefix, tags

ROOT = Path(__file__).resolve().parent.parent
_GONE = ("NoSuchBucket", "404", "NotFound")


def ensure_bucket(cloud: Cloud, bucket: str, run_id: str, ledger: Ledger) -> None:
    s3 = cloud.s3
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=cloud.account)
        return
    except Exception as e:
        if error_code(e) not in ("404", "NoSuchBucket", "NotFound"):
            raise InfraError(f"bucket {bucket} exists but is not ours or not readable") from None
    kw: dict[str, Any] = {"Bucket": bucket, "ObjectOwnership": "BucketOwnerEnforced"}
    if cloud.region != "us-east-1":
        kw["CreateBucketConfiguration"] = {"LocationConstraint": cloud.region}
    s3.create_bucket(**kw)
    ledger.add(f"bucket s3://{bucket}", lambda: purge_bucket(cloud, bucket))
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    tls_only = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }
    if s3.meta.endpoint_url.startswith("https://"):
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(tls_only))
    else:  # a plain-http endpoint (a local emulator) could never satisfy the policy
        progress(f"  {s3.meta.endpoint_url} is not https: TLS-only bucket policy not applied")
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags(run_id, "bucket")})


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise InfraError(f"git {' '.join(args)} failed in {ROOT}: {e}") from None


def code_version() -> dict[str, Any]:
    """HEAD's commit and the files whose working-tree content differs from it."""
    status = [ln[3:] for ln in _git("status", "--porcelain").splitlines() if ln.strip()]
    return {"commit": _git("rev-parse", "HEAD").strip(), "dirty": sorted(status)}


def build_tarball() -> tuple[bytes, dict[str, Any]]:
    """The working tree (tracked + untracked-not-ignored files) as a gzipped tar, in memory."""
    files = sorted(set(_git("ls-files", "-z", "-c", "-o", "--exclude-standard").split("\0")) - {""})
    version = code_version()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel in files:
            p = ROOT / rel
            if p.is_file():  # a tracked file deleted on disk is simply absent
                tar.add(p, arcname=rel, recursive=False)
        blob = json.dumps(version, indent=2).encode()
        info = tarfile.TarInfo("VERSION.json")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue(), version


def upload_code(cloud: Cloud, bucket: str, run_id: str) -> dict[str, Any]:
    """Ship the code once per run (a second ``up`` keeps what the nodes already booted with)."""
    key = code_key(run_id)
    head = ignore_missing(cloud.s3.head_object, Bucket=bucket, Key=key, codes=_GONE)
    if head is not None:
        return {"commit": head.get("Metadata", {}).get("commit", "?"), "reused": True}
    blob, version = build_tarball()
    cloud.s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=blob,
        ServerSideEncryption="AES256",
        Metadata={"commit": version["commit"], "dirty": str(len(version["dirty"]))},
    )
    dirty = f", {len(version['dirty'])} uncommitted change(s)" if version["dirty"] else ""
    progress(f"  uploaded code {version['commit'][:12]}{dirty} ({len(blob) // 1024} KiB)")
    return version


def upload_dir(s3: Any, local: Path, bucket: str, prefix: str) -> int:
    """Upload every file under ``local`` to ``prefix``; returns the count."""
    n = 0
    for p in sorted(local.rglob("*")):
        if p.is_file():
            key = prefix + p.relative_to(local).as_posix()
            s3.upload_file(str(p), bucket, key, ExtraArgs={"ServerSideEncryption": "AES256"})
            n += 1
    return n


def download_results(cloud: Cloud, bucket: str, run_id: str, dest: Path) -> int:
    """Copy ``results/<run-id>/`` to ``dest``; returns the number of files."""
    prefix = results_prefix(run_id)
    n = 0
    paginator = cloud.s3.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                target = (dest / rel).resolve()
                if not rel or dest.resolve() not in target.parents:
                    continue  # never write outside dest, whatever a key says
                target.parent.mkdir(parents=True, exist_ok=True)
                cloud.s3.download_file(bucket, obj["Key"], str(target))
                n += 1
    except Exception as e:
        if error_code(e) in _GONE:
            raise InfraError(f"bucket {bucket} does not exist (purged?)") from None
        raise
    return n


def bucket_exists(cloud: Cloud, bucket: str) -> bool:
    found = ignore_missing(
        cloud.s3.head_bucket, Bucket=bucket, ExpectedBucketOwner=cloud.account, codes=_GONE
    )
    return found is not None


def purge_bucket(cloud: Cloud, bucket: str) -> int:
    """Delete every object (and version) and the bucket itself; returns 1, or 0 if it was
    already gone."""
    s3 = cloud.s3
    try:
        paginator = s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket):
            objs = [
                {"Key": o["Key"], "VersionId": o["VersionId"]}
                for o in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if objs:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": objs, "Quiet": True})
        s3.delete_bucket(Bucket=bucket)
        progress(f"  deleted bucket s3://{bucket}")
        return 1
    except Exception as e:
        if error_code(e) not in _GONE:
            raise
        return 0


def run_buckets(cloud: Cloud) -> dict[str, tuple[str, str]]:
    """{run id: (bucket, creation time)} of this account's echoswarm buckets in this region."""
    prefix = f"echoswarm-{cloud.account}-"
    out = {}
    for b in cloud.s3.list_buckets().get("Buckets", []):
        name = b["Name"]
        if not name.startswith(prefix):
            continue
        region = b.get("BucketRegion") or (
            cloud.s3.get_bucket_location(Bucket=name).get("LocationConstraint") or "us-east-1"
        )
        if region == cloud.region:
            created = b["CreationDate"].strftime("%Y-%m-%dT%H:%M:%SZ")
            out[name[len(prefix) :]] = (name, created)
    return out
