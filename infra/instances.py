"""The run's EC2 instances: AMI lookup, pre-flight checks, launch (find-or-launch per role),
waiting, listing and termination — all by the run's tag.

Written for real EC2 and checked against moto, whose gaps it does not rely on: MinCount =
MaxCount so a partial launch cannot happen silently (moto ignores MaxCount); existing nodes are
found by tag before launching (moto ignores ClientToken, which is still sent for real retries);
"running" is waited for by polling (moto is instantly running); no placement group is used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from infra import interrupt, prices
from infra.aws import Cloud, error_code, error_text, poll, progress
from infra.ledger import Ledger
from infra.spec import TAG_EXPIRES, TAG_ROLE, InfraError, RunSpec, run_filter, tags

AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
RUNNING_TIMEOUT = 600.0
TERMINATE_TIMEOUT = 600.0


def architectures(cloud: Cloud, types: set[str]) -> dict[str, str]:
    """{instance type: x86_64|arm64}; an unknown type is a clear error before anything exists."""
    known: dict[str, str] = {}
    try:
        resp = cloud.ec2.describe_instance_types(InstanceTypes=sorted(types))
    except Exception as e:
        if error_code(e).startswith("InvalidInstanceType"):
            raise InfraError(f"unknown instance type: {error_text(e)}") from None
        raise
    for it in resp["InstanceTypes"]:
        archs = it["ProcessorInfo"]["SupportedArchitectures"]
        known[it["InstanceType"]] = "arm64" if "arm64" in archs else "x86_64"
    missing = types - set(known)
    if missing:
        raise InfraError(
            f"unknown instance type(s) in {cloud.region}: {', '.join(sorted(missing))}"
        )
    offered = cloud.ec2.describe_instance_type_offerings(
        LocationType="region", Filters=[{"Name": "instance-type", "Values": sorted(types)}]
    )["InstanceTypeOfferings"]
    absent = types - {o["InstanceType"] for o in offered}
    if absent:
        raise InfraError(f"not offered in {cloud.region}: {', '.join(sorted(absent))}")
    return known


def resolve_ami(cloud: Cloud, arch: str) -> dict[str, Any]:
    """The current Amazon Linux 2023 AMI from AWS's public SSM parameter."""
    param = AMI_PARAMETER.format(arch=arch)
    try:
        ami = cloud.ssm.get_parameter(Name=param)["Parameter"]["Value"]
        image = cloud.ec2.describe_images(ImageIds=[ami])["Images"][0]
    except Exception as e:
        raise InfraError(f"cannot resolve the AMI from {param}: {error_text(e)}") from None
    return dict(image)


def dry_run(cloud: Cloud, image_id: str, instance_type: str) -> None:
    """Ask EC2 whether RunInstances would be allowed (DryRun); only a clear refusal stops us.

    Other answers (e.g. no default VPC to dry-run into) say nothing about permissions.
    """
    try:
        cloud.ec2.run_instances(
            ImageId=image_id, InstanceType=instance_type, MinCount=1, MaxCount=1, DryRun=True
        )
    except Exception as e:
        code = error_code(e)
        if code == "DryRunOperation":
            return
        if code in ("UnauthorizedOperation", "AccessDenied", "AuthFailure"):
            raise InfraError(f"missing permission: {error_text(e)}") from None
        if code.startswith("InvalidInstanceType") or code == "Unsupported":
            raise InfraError(f"{instance_type}: {error_text(e)}") from None


@dataclass
class Node:
    instance_id: str
    role: str
    state: str
    instance_type: str
    private_ip: str
    launched: datetime
    spot: bool
    expires: str = ""
    public_ip: str = ""

    def hours(self, now: datetime) -> float:
        return max(0.0, (now - self.launched).total_seconds() / 3600)

    def cost_so_far(self, now: datetime) -> float | None:
        rate = prices.instance_hourly(self.instance_type, spot=self.spot)
        if rate is None:
            return None
        return (rate + prices.node_overhead_hourly()) * self.hours(now)


def nodes(cloud: Cloud, run_id: str, states: list[str] | None = None) -> list[Node]:
    """Every instance of the run (optionally only in ``states``), sorted by role then id."""
    filters = run_filter(run_id)
    if states:
        filters = [*filters, {"Name": "instance-state-name", "Values": states}]
    out = []
    paginator = cloud.ec2.get_paginator("describe_instances")
    for page in paginator.paginate(Filters=filters):
        for res in page["Reservations"]:
            for i in res["Instances"]:
                t = {x["Key"]: x["Value"] for x in i.get("Tags", [])}
                out.append(
                    Node(
                        instance_id=i["InstanceId"],
                        role=t.get(TAG_ROLE, "?"),
                        state=i["State"]["Name"],
                        instance_type=i["InstanceType"],
                        private_ip=i.get("PrivateIpAddress", ""),
                        launched=i["LaunchTime"],
                        spot=i.get("InstanceLifecycle") == "spot",
                        expires=t.get(TAG_EXPIRES, ""),
                        public_ip=i.get("PublicIpAddress", ""),
                    )
                )
    return sorted(out, key=lambda n: (n.role, n.instance_id))


def launch(
    cloud: Cloud,
    run_id: str,
    role: str,
    count: int,
    *,
    instance_type: str,
    image: dict[str, Any],
    subnet_id: str,
    group_id: str,
    profile: str,
    user_data: str,
    spec: RunSpec,
    ledger: Ledger,
    expires: datetime | None = None,
) -> list[Node]:
    """Make sure ``count`` live instances of ``role`` exist; launch only the missing ones.

    ``expires`` (the deadline the user-data's lifetime guard enforces) becomes the
    ``echoswarm:expires`` tag."""
    have = [n for n in nodes(cloud, run_id, LIVE_STATES) if n.role == role]
    missing = count - len(have)
    if missing <= 0:
        return have
    expires = expires or datetime.now(UTC) + timedelta(minutes=spec.max_lifetime_minutes)
    tagset = tags(run_id, role, role=role, **{TAG_EXPIRES: expires.strftime("%Y-%m-%dT%H:%M:%SZ")})
    kw: dict[str, Any] = {
        "ImageId": image["ImageId"],
        "InstanceType": instance_type,
        "MinCount": missing,  # all or nothing (moto would ignore a larger MaxCount)
        "MaxCount": missing,
        "SubnetId": subnet_id,
        "SecurityGroupIds": [group_id],
        "IamInstanceProfile": {"Name": profile},
        "UserData": user_data,
        "MetadataOptions": {
            "HttpTokens": "required",  # IMDSv2 only
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 1,
        },
        "InstanceInitiatedShutdownBehavior": "terminate",  # the lifetime guard's shutdown ends it
        "BlockDeviceMappings": [
            {
                "DeviceName": image.get("RootDeviceName", "/dev/xvda"),
                "Ebs": {
                    "VolumeSize": prices.ROOT_VOLUME_GB,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ],
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tagset},
            {"ResourceType": "volume", "Tags": tagset},
        ],
        # Same token on a retried call = the same instances on real EC2 (moto ignores it, and
        # the tag lookup above covers re-runs); distinct per batch so growing a run works.
        "ClientToken": f"{run_id}-{role}-{len(have)}-{missing}",
    }
    if spec.spot and role == "worker":
        kw["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            },
        }
    progress(f"  launching {missing} {role} node(s) ({instance_type})")
    resp = _run_instances_when_profile_visible(cloud, kw)
    ids = [i["InstanceId"] for i in resp["Instances"]]
    ledger.add(f"{len(ids)} {role} instance(s)", lambda: terminate(cloud, ids))
    if len(ids) != missing:
        raise InfraError(f"asked EC2 for {missing} {role} node(s), got {len(ids)}")
    return [n for n in nodes(cloud, run_id, LIVE_STATES) if n.role == role]


def _run_instances_when_profile_visible(cloud: Cloud, kw: dict[str, Any]) -> Any:
    """A new instance profile takes seconds to become usable by EC2; retry only that error."""
    deadline = time.monotonic() + 90
    delay = 2.0
    while True:
        try:
            return cloud.ec2.run_instances(**kw)
        except Exception as e:
            propagating = error_code(e) == "InvalidParameterValue" and "iam" in str(e).lower()
            if not propagating or time.monotonic() > deadline:
                raise
            progress("  instance profile not visible to EC2 yet, retrying")
            interrupt.sleep(delay)
            delay = min(delay * 2, 10)


def wait_running(cloud: Cloud, run_id: str) -> None:
    def check() -> tuple[bool, str]:
        ns = nodes(cloud, run_id, LIVE_STATES)
        up = sum(n.state == "running" for n in ns)
        bad = [n for n in ns if n.state in ("stopping", "stopped", "shutting-down")]
        if bad:
            raise InfraError(f"instance {bad[0].instance_id} went {bad[0].state} while starting")
        return bool(ns) and up == len(ns), f"{up}/{len(ns)} running"

    poll("instances", check, timeout=RUNNING_TIMEOUT)


def terminate(cloud: Cloud, instance_ids: list[str]) -> None:
    """Terminate and wait until EC2 reports every one terminated."""
    if not instance_ids:
        return
    cloud.ec2.terminate_instances(InstanceIds=instance_ids)

    def check() -> tuple[bool, str]:
        resp = cloud.ec2.describe_instances(InstanceIds=instance_ids)
        states = [i["State"]["Name"] for r in resp["Reservations"] for i in r["Instances"]]
        gone = sum(s == "terminated" for s in states)
        return gone == len(states), f"{gone}/{len(states)} terminated"

    poll("termination", check, timeout=TERMINATE_TIMEOUT)


def terminate_run(cloud: Cloud, run_id: str) -> int:
    ids = [n.instance_id for n in nodes(cloud, run_id, LIVE_STATES)]
    if ids:
        progress(f"  terminating {len(ids)} instance(s)")
        terminate(cloud, ids)
    return len(ids)
