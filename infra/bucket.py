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
from infra.spec import (
    TAG_CREATED,
    TAG_PROJECT,
    TAG_RUN,
    InfraError,
    code_key,
    results_prefix,
    tags,
)

_GONE = ("NoSuchBucket", "404", "NotFound")


PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
OWNERSHIP = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def tls_only_policy(bucket: str) -> dict[str, Any]:
    return {
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


def ensure_bucket(cloud: Cloud, bucket: str, run_id: str, ledger: Ledger) -> None:
    """Create the run's bucket, or take over the one a previous (interrupted) ``up`` left; either
    way apply every protection and read each one back — a bucket that cannot be made private,
    encrypted, TLS-only and tagged is refused, never used as it is."""
    s3 = cloud.s3
    try:
        head = s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=cloud.account)
    except Exception as e:
        if error_code(e) not in _GONE:
            raise InfraError(f"bucket {bucket} exists but is not ours or not readable") from None
        head = None
    old_tags: dict[str, str] = {}
    if head is None:
        kw: dict[str, Any] = {"Bucket": bucket, "ObjectOwnership": "BucketOwnerEnforced"}
        if cloud.region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": cloud.region}
        s3.create_bucket(**kw)
        ledger.add(f"bucket s3://{bucket}", lambda: purge_bucket(cloud, bucket))
    else:
        old_tags = _reusable(cloud, bucket, run_id, head)
        progress(f"  reusing bucket s3://{bucket}: re-applying and checking its protections")
    https = s3.meta.endpoint_url.startswith("https://")
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=OWNERSHIP)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTION)
    if https:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(tls_only_policy(bucket)))
    else:  # a plain-http endpoint (a local emulator) could never satisfy the policy
        progress(f"  {s3.meta.endpoint_url} is not https: TLS-only bucket policy not applied")
    tagset = tags(run_id, "bucket")
    if TAG_CREATED in old_tags:  # a reused bucket keeps its age (sweep goes by it)
        tagset = [
            t if t["Key"] != TAG_CREATED else {**t, "Value": old_tags[TAG_CREATED]} for t in tagset
        ]
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tagset})
    missing = check_protections(cloud, bucket, run_id, tls_policy=https)
    if missing:
        raise InfraError(f"bucket {bucket} is not safe to use: {'; '.join(missing)}")


def _reusable(cloud: Cloud, bucket: str, run_id: str, head: dict[str, Any]) -> dict[str, str]:
    """An existing bucket may be taken over only if it is in the run's region and carries no
    tags, or this run's; returns its tags."""
    region = head.get("BucketRegion") or head.get("ResponseMetadata", {}).get(
        "HTTPHeaders", {}
    ).get("x-amz-bucket-region")
    if region and region != cloud.region:
        raise InfraError(f"bucket {bucket} exists in {region}, not {cloud.region}; refused")
    found = ignore_missing(cloud.s3.get_bucket_tagging, Bucket=bucket, codes=("NoSuchTagSet",))
    old = {t["Key"]: t["Value"] for t in (found or {}).get("TagSet", [])}
    if old and (old.get(TAG_PROJECT) != "true" or old.get(TAG_RUN) != run_id):
        raise InfraError(
            f"bucket {bucket} exists with tags of something else "
            f"({TAG_RUN}={old.get(TAG_RUN, '-')}); refused"
        )
    return old


def check_protections(cloud: Cloud, bucket: str, run_id: str, *, tls_policy: bool) -> list[str]:
    """Read every protection back; returns what is missing (empty: the bucket is as intended)."""
    s3 = cloud.s3
    missing = []

    def read(fn: Any, key: str, **kw: Any) -> Any:
        try:
            return fn(Bucket=bucket, **kw)[key]
        except Exception as e:
            if error_code(e) in _GONE or "AccessDenied" in error_code(e):
                raise
            return None  # not configured: NoSuch...Configuration, NoSuchBucketPolicy, ...

    block = read(s3.get_public_access_block, "PublicAccessBlockConfiguration")
    if not block or not all(block.get(k) for k in PUBLIC_ACCESS_BLOCK):
        missing.append("public access not fully blocked")
    owner = read(s3.get_bucket_ownership_controls, "OwnershipControls")
    if not owner or owner["Rules"][0].get("ObjectOwnership") != "BucketOwnerEnforced":
        missing.append("ACLs not disabled (ownership not BucketOwnerEnforced)")
    enc = read(s3.get_bucket_encryption, "ServerSideEncryptionConfiguration")
    algos = [
        r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
        for r in (enc or {}).get("Rules", [])
    ]
    if not any(a in ("AES256", "aws:kms", "aws:kms:dsse") for a in algos):
        missing.append("no default encryption")
    if tls_policy:
        policy = json.loads(read(s3.get_bucket_policy, "Policy") or "{}")
        if not any(
            st.get("Effect") == "Deny"
            and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
            for st in policy.get("Statement", [])
        ):
            missing.append("no TLS-only policy")
    tagset = read(s3.get_bucket_tagging, "TagSet") or []
    t = {x["Key"]: x["Value"] for x in tagset}
    if t.get(TAG_RUN) != run_id or t.get(TAG_PROJECT) != "true":
        missing.append("not tagged for the run")
    return missing


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
