"""The run's S3 bucket (private, encrypted, TLS-only), the code tarball's upload, and results
transfer. What goes into the tarball is :mod:`infra.tarball`'s rule."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from infra import tarball
from infra.aws import Cloud, error_code, ignore_missing, progress
from infra.ledger import Ledger
from infra.spec import InfraError, code_key, results_prefix, tags

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


def upload_code(
    cloud: Cloud, bucket: str, run_id: str, include: Iterable[str] = ()
) -> dict[str, Any]:
    """Ship the code once per run (a second ``up`` keeps what the nodes already booted with)."""
    key = code_key(run_id)
    head = ignore_missing(cloud.s3.head_object, Bucket=bucket, Key=key, codes=_GONE)
    if head is not None:
        return {"commit": head.get("Metadata", {}).get("commit", "?"), "reused": True}
    blob, version = tarball.build(include)
    cloud.s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=blob,
        ServerSideEncryption="AES256",
        Metadata={
            "commit": version["commit"],
            "dirty": str(len(version["dirty"])),
            "files": str(len(version["files"])),
            "withheld": str(len(version["withheld"])),
        },
    )
    for line in tarball.describe(version):
        progress(f"  {line}")
    progress(f"  uploaded the code ({len(blob) // 1024} KiB)")
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
