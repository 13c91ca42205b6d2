"""The nodes' IAM role and instance profile: read the code tarball, write only this run's results
prefix, and what the SSM agent needs for Run Command. Nothing else."""

from __future__ import annotations

import json
from typing import Any

from infra.aws import Cloud, ignore_missing, poll, progress
from infra.ledger import Ledger
from infra.spec import TAG_REGION, code_key, name, results_prefix, tags

PATH = "/echoswarm/"
POLICY_NAME = "echoswarm-node"
_GONE = ("NoSuchEntity",)
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def role_name(run_id: str) -> str:
    return name(run_id, "node")


def node_policy(bucket: str, run_id: str) -> dict[str, Any]:
    """Least privilege for a node (the SSM agent actions have no resource-level scoping)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadCode",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/{code_key(run_id)}"],
            },
            {
                "Sid": "WriteThisRunsResults",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/{results_prefix(run_id)}*"],
            },
            {
                "Sid": "SsmAgentForRunCommand",
                "Effect": "Allow",
                "Action": [
                    "ssm:UpdateInstanceInformation",
                    "ssm:ListInstanceAssociations",
                    "ec2messages:AcknowledgeMessage",
                    "ec2messages:DeleteMessage",
                    "ec2messages:FailMessage",
                    "ec2messages:GetEndpoint",
                    "ec2messages:GetMessages",
                    "ec2messages:SendReply",
                    "ssmmessages:CreateControlChannel",
                    "ssmmessages:CreateDataChannel",
                    "ssmmessages:OpenControlChannel",
                    "ssmmessages:OpenDataChannel",
                ],
                "Resource": "*",
            },
        ],
    }


def ensure_profile(cloud: Cloud, run_id: str, bucket: str, ledger: Ledger) -> str:
    """Role (with its inline policy) inside an instance profile; returns the profile name."""
    iam = cloud.iam
    rname = role_name(run_id)
    if ignore_missing(iam.get_role, RoleName=rname, codes=_GONE) is None:
        iam.create_role(
            RoleName=rname,
            Path=PATH,
            AssumeRolePolicyDocument=json.dumps(TRUST),
            Description=f"echoswarm run {run_id} nodes",
            MaxSessionDuration=3600,
            Tags=tags(run_id, "node", **{TAG_REGION: cloud.region}),
        )
        ledger.add(f"IAM role {rname}", lambda: delete_profile(cloud, run_id))
    iam.put_role_policy(
        RoleName=rname,
        PolicyName=POLICY_NAME,
        PolicyDocument=json.dumps(node_policy(bucket, run_id)),
    )
    found = ignore_missing(iam.get_instance_profile, InstanceProfileName=rname, codes=_GONE)
    if found is None:
        found = iam.create_instance_profile(
            InstanceProfileName=rname,
            Path=PATH,
            Tags=tags(run_id, "node", **{TAG_REGION: cloud.region}),
        )
        ledger.add(f"instance profile {rname}", lambda: delete_profile(cloud, run_id))
    if not any(r["RoleName"] == rname for r in found["InstanceProfile"].get("Roles", [])):
        iam.add_role_to_instance_profile(InstanceProfileName=rname, RoleName=rname)
    return rname


def delete_profile(cloud: Cloud, run_id: str) -> int:
    """Profile, then role (its inline policies first); each step tolerates "already gone".
    Returns how many of the two were deleted."""
    iam = cloud.iam
    rname = role_name(run_id)
    role = ignore_missing(iam.get_role, RoleName=rname, codes=_GONE)
    region = {t["Key"]: t["Value"] for t in (role or {}).get("Role", {}).get("Tags", [])}.get(
        TAG_REGION, cloud.region
    )
    if region != cloud.region:  # IAM is global: never pull the role from under a live run
        progress(f"  kept IAM role {rname}: it belongs to the run's nodes in {region}")
        return 0
    deleted = 0
    prof = ignore_missing(iam.get_instance_profile, InstanceProfileName=rname, codes=_GONE)
    if prof is not None:
        for r in prof["InstanceProfile"].get("Roles", []):
            ignore_missing(
                iam.remove_role_from_instance_profile,
                InstanceProfileName=rname,
                RoleName=r["RoleName"],
                codes=_GONE,
            )
        ignore_missing(iam.delete_instance_profile, InstanceProfileName=rname, codes=_GONE)
        progress(f"  deleted instance profile {rname}")
        deleted += 1
    if ignore_missing(iam.get_role, RoleName=rname, codes=_GONE) is not None:
        for pname in iam.list_role_policies(RoleName=rname).get("PolicyNames", []):
            ignore_missing(iam.delete_role_policy, RoleName=rname, PolicyName=pname, codes=_GONE)
        for att in iam.list_attached_role_policies(RoleName=rname).get("AttachedPolicies", []):
            ignore_missing(
                iam.detach_role_policy, RoleName=rname, PolicyArn=att["PolicyArn"], codes=_GONE
            )
        ignore_missing(iam.delete_role, RoleName=rname, codes=_GONE)
        progress(f"  deleted IAM role {rname}")
        deleted += 1
    return deleted


def node_roles(cloud: Cloud) -> dict[str, str]:
    """{run id: creation time} of the echoswarm node roles made for runs in this region.

    IAM is global: a role tagged with another region belongs to a run there and is left alone.
    """
    out: dict[str, str] = {}
    paginator = cloud.iam.get_paginator("list_roles")
    for page in paginator.paginate(PathPrefix=PATH):
        for r in page["Roles"]:
            rn = r["RoleName"]
            if not (rn.startswith("echoswarm-") and rn.endswith("-node")):
                continue
            role_tags = cloud.iam.list_role_tags(RoleName=rn).get("Tags", [])
            if {"Key": TAG_REGION, "Value": cloud.region} not in role_tags:
                continue
            created = r["CreateDate"].strftime("%Y-%m-%dT%H:%M:%SZ")
            out[rn[len("echoswarm-") : -len("-node")]] = created
    return out


def wait_profile_usable(cloud: Cloud, profile: str) -> None:
    """IAM is eventually consistent: wait until the profile reads back with its role."""

    def check() -> tuple[bool, str]:
        p = ignore_missing(cloud.iam.get_instance_profile, InstanceProfileName=profile, codes=_GONE)
        ok = bool(p and p["InstanceProfile"].get("Roles"))
        return ok, "ready" if ok else "propagating"

    poll(f"instance profile {profile}", check, timeout=60)
