"""``up``, ``down`` and ``sweep``: create a run (rolled back on failure), remove one (idempotent,
safe after a partial ``up``), and find/remove leftovers of any run in the region."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from infra import bucket as s3b
from infra import iam, instances, interrupt, network, state, userdata
from infra.aws import Cloud, error_text, progress
from infra.interrupt import Interrupted
from infra.ledger import Ledger
from infra.spec import TAG_CREATED, TAG_RUN, InfraError, RunSpec, bucket_name


def preflight(cloud: Cloud, spec: RunSpec) -> dict[str, dict[str, Any]]:
    """Every check that can fail before anything exists; returns {instance type: AMI image}."""
    progress(f"checking credentials, instance types and permissions in {cloud.region}")
    _ = cloud.account
    if spec.subnet_id:
        network.existing_subnet(cloud, spec.subnet_id)
    archs = instances.architectures(cloud, {spec.worker_type, spec.master_type, spec.server_type})
    images = {arch: instances.resolve_ami(cloud, arch) for arch in set(archs.values())}
    for itype, arch in sorted(archs.items()):
        instances.dry_run(cloud, images[arch]["ImageId"], itype)
    return {itype: images[arch] for itype, arch in archs.items()}


def up(
    cloud: Cloud,
    run_id: str,
    spec: RunSpec,
    *,
    profile: str | None,
    include: Iterable[str] = (),
) -> dict[str, Any]:
    images = preflight(cloud, spec)
    bucket = bucket_name(cloud.account, run_id)
    state.remember(
        run_id,
        {
            "region": cloud.region,
            "profile": profile,
            "bucket": bucket,
            "spec": spec.to_json(),
            "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "down": False,
        },
    )
    progress(f"up {run_id}: {spec.workers} worker(s) + master + server node in {cloud.region}")
    ledger = Ledger()
    try:
        s3b.ensure_bucket(cloud, bucket, run_id, ledger)
        version = s3b.upload_code(cloud, bucket, run_id, include)
        profile_name = iam.ensure_profile(cloud, run_id, bucket, ledger)
        iam.wait_profile_usable(cloud, profile_name)
        net = network.ensure_network(cloud, run_id, spec, ledger)

        def launch(role: str, count: int, itype: str, group: str, **ud: Any) -> list[Any]:
            # One deadline for the tag and the node's own guard (infra.userdata).
            expires = datetime.now(UTC) + timedelta(minutes=spec.max_lifetime_minutes)
            data = userdata.cloud_config(
                role,
                run_id,
                bucket=bucket,
                region=cloud.region,
                lifetime_minutes=spec.max_lifetime_minutes,
                expires_epoch=int(expires.timestamp()),
                **ud,
            )
            return instances.launch(
                cloud,
                run_id,
                role,
                count,
                instance_type=itype,
                image=images[itype],
                subnet_id=net["subnet_id"],
                group_id=net["groups"][group],
                profile=profile_name,
                user_data=data,
                spec=spec,
                ledger=ledger,
                expires=expires,
            )

        launch("server", 1, spec.server_type, "servers", servers=spec.server_ports())
        master = launch("master", 1, spec.master_type, "master")[0]
        launch("worker", spec.workers, spec.worker_type, "workers", master_host=master.private_ip)
        instances.wait_running(cloud, run_id)
    except BaseException as e:  # a signal half way must roll back too (infra.interrupt)
        with interrupt.shielded():  # first thing: no later signal may skip the rollback
            if isinstance(e, Interrupted):
                cause = f"interrupted by {e.name}"
            else:
                cause = str(e) if isinstance(e, InfraError) else error_text(e)
            if ledger.entries:
                progress(f"up failed ({cause}); rolling back what this up created")
            undone = len(ledger.entries)
            left = ledger.rollback()
        ignored = interrupt.ignored_count()
        tail = f"; NOT rolled back: {'; '.join(left)}" if left else ""
        tail += f"; {ignored} further signal(s) ignored while rolling back" if ignored else ""
        if isinstance(e, Interrupted):
            raise Interrupted(
                e.signum, f"rolled back {undone - len(left)} of {undone} resource(s){tail}"
            ) from None
        raise InfraError(f"up failed: {cause}{tail}") from None
    created = len(ledger.entries)
    if not created:
        progress("  nothing to add: the run already has everything")
    return {"run_id": run_id, "bucket": bucket, "code": version, "created": created, **net}


def down(cloud: Cloud, run_id: str, *, purge: bool) -> tuple[int, bool]:
    """Remove everything of the run (by tag and name); each step tolerates "already gone".

    Returns (how many things were removed, whether the results bucket was kept).
    """
    progress(f"down {run_id} in {cloud.region}")
    removed = instances.terminate_run(cloud, run_id)
    removed += network.destroy_network(cloud, run_id)
    removed += iam.delete_profile(cloud, run_id)
    bucket = bucket_name(cloud.account, run_id)
    kept = False
    if purge:
        removed += s3b.purge_bucket(cloud, bucket)
    elif s3b.bucket_exists(cloud, bucket):
        kept = True
        progress(f"  kept s3://{bucket} (results); `down --purge` deletes it")
    state.forget(run_id)
    return removed, kept


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def leftovers(cloud: Cloud, *, buckets: bool = False) -> dict[str, dict[str, Any]]:
    """{run id: {"created": datetime|None, "what": [..]}} for every echoswarm run in the region."""
    found: dict[str, dict[str, Any]] = {}
    ec2 = cloud.ec2
    has_tag = [{"Name": "tag-key", "Values": [TAG_RUN]}]

    def note(tags_: list[dict[str, str]], what: str) -> None:
        t = {x["Key"]: x["Value"] for x in tags_}
        rid = t.get(TAG_RUN)
        if not rid:
            return
        entry = found.setdefault(rid, {"created": None, "what": []})
        entry["what"].append(what)
        when = _parse_time(t.get(TAG_CREATED, ""))
        if when and (entry["created"] is None or when < entry["created"]):
            entry["created"] = when

    live = [*has_tag, {"Name": "instance-state-name", "Values": instances.LIVE_STATES}]
    for page in ec2.get_paginator("describe_instances").paginate(Filters=live):
        for r in page["Reservations"]:
            for i in r["Instances"]:
                note(i.get("Tags", []), f"instance {i['InstanceId']}")
    for g in ec2.describe_security_groups(Filters=has_tag)["SecurityGroups"]:
        note(g.get("Tags", []), f"security group {g['GroupId']}")
    for s in ec2.describe_subnets(Filters=has_tag)["Subnets"]:
        note(s.get("Tags", []), f"subnet {s['SubnetId']}")
    for v in ec2.describe_vpcs(Filters=has_tag)["Vpcs"]:
        note(v.get("Tags", []), f"VPC {v['VpcId']}")
    for rid, created in iam.node_roles(cloud).items():
        note([{"Key": TAG_RUN, "Value": rid}, {"Key": TAG_CREATED, "Value": created}], "IAM role")
    if buckets:  # kept results: only swept with --purge
        for rid, (name, created) in s3b.run_buckets(cloud).items():
            note([{"Key": TAG_RUN, "Value": rid}, {"Key": TAG_CREATED, "Value": created}], name)
    return found


def sweep(cloud: Cloud, older_than: timedelta, *, yes: bool, purge: bool) -> list[str]:
    """List (and with ``yes`` remove) runs older than ``older_than``; returns their ids."""
    now = datetime.now(UTC)
    old = []
    for rid, info in sorted(leftovers(cloud, buckets=purge).items()):
        created = info["created"]
        age = (
            "age unknown" if created is None else f"{(now - created).total_seconds() / 3600:.1f} h"
        )
        if created is not None and now - created < older_than:
            progress(f"  {rid}: {age} old, younger than the threshold; kept")
            continue
        old.append(rid)
        print(f"{rid}\t{age}\t{len(info['what'])} resource(s): {', '.join(info['what'])}")
    if not yes:
        if old:
            progress(f"{len(old)} run(s) to remove; run again with --yes to remove them")
        return old
    for rid in old:
        try:
            down(cloud, rid, purge=purge)
        except Exception as e:  # one stubborn run must not keep the others alive
            progress(f"  {rid}: {error_text(e)}")
            raise InfraError(f"sweep: {rid} could not be removed: {error_text(e)}") from None
    return old
