"""The run's network: VPC, subnet, internet gateway + route (egress only) and the three
least-privilege security groups. Find-or-create (idempotent) and delete-by-tag.

Rules, and why:
- workers: no ingress at all; egress HTTPS anywhere (PyPI, S3, SSM) plus ZeroMQ to the master
  group and the server ports to the servers group.
- master: ZeroMQ 5557 only from the workers group; the web UI 8089 only from ``--allow-cidr``
  (no rule without it — the operator's address is never guessed); egress HTTPS.
- servers: each server port only from the workers group; egress HTTPS.
No ingress rule ever names 0.0.0.0/0. DNS, NTP and instance metadata go to link-local/VPC
addresses that security groups do not filter. IPv6 is never opened: in a dual-stack VPC (a
``--subnet``) AWS's default egress to ``::/0`` is revoked like the IPv4 one, and any IPv6 or
prefix-list rule found on a re-``up`` is revoked as unintended.
"""

from __future__ import annotations

from typing import Any

from infra.aws import Cloud, error_code, ignore_missing, poll, progress
from infra.ledger import Ledger
from infra.spec import (
    MASTER_PORT,
    SUBNET_CIDR,
    VPC_CIDR,
    WEB_PORT,
    InfraError,
    RunSpec,
    name,
    run_filter,
    tags,
)

ROLES = ("master", "workers", "servers")
HTTPS_ANYWHERE = {
    "IpProtocol": "tcp",
    "FromPort": 443,
    "ToPort": 443,
    "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "HTTPS: PyPI, S3, SSM"}],
}
DEPENDENCY_TIMEOUT = 180.0  # ENIs of just-terminated instances take a while to go


def _spec_tags(run_id: str, what: str, resource_type: str) -> list[dict[str, Any]]:
    return [{"ResourceType": resource_type, "Tags": tags(run_id, what)}]


def _one(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    return items[0] if items else None


def pick_zone(cloud: Cloud, instance_types: set[str]) -> str:
    """An availability zone that offers every instance type of the run (first by name)."""
    resp = cloud.ec2.describe_instance_type_offerings(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": sorted(instance_types)}],
    )
    zones: dict[str, set[str]] = {}
    for off in resp["InstanceTypeOfferings"]:
        zones.setdefault(off["Location"], set()).add(off["InstanceType"])
    good = sorted(z for z, have in zones.items() if have >= instance_types)
    if not good:
        raise InfraError(f"no availability zone in {cloud.region} offers all of {instance_types}")
    return good[0]


def existing_subnet(cloud: Cloud, subnet_id: str) -> dict[str, Any]:
    """The ``--subnet`` the user named (a clear error if it is not there)."""
    try:
        return dict(cloud.ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0])
    except Exception as e:
        if error_code(e).startswith("InvalidSubnet"):
            raise InfraError(f"--subnet {subnet_id}: no such subnet in {cloud.region}") from None
        raise


def ensure_network(cloud: Cloud, run_id: str, spec: RunSpec, ledger: Ledger) -> dict[str, Any]:
    """VPC + subnet (or the given ``--subnet``) and the security groups; returns their ids."""
    if spec.subnet_id:
        sub = existing_subnet(cloud, spec.subnet_id)
        vpc_id, subnet_id = sub["VpcId"], sub["SubnetId"]
    else:
        vpc_id = _ensure_vpc(cloud, run_id, ledger)
        subnet_id = _ensure_subnet(cloud, run_id, spec, vpc_id, ledger)
        _ensure_egress_route(cloud, run_id, vpc_id, subnet_id, ledger)
    groups = {role: _ensure_group(cloud, run_id, vpc_id, role, ledger) for role in ROLES}
    for role, rules in intended_rules(spec, groups).items():
        _apply_rules(cloud, groups[role], rules)
    return {"vpc_id": vpc_id, "subnet_id": subnet_id, "groups": groups}


def _ensure_vpc(cloud: Cloud, run_id: str, ledger: Ledger) -> str:
    found = _one(cloud.ec2.describe_vpcs(Filters=run_filter(run_id))["Vpcs"])
    if found:
        return str(found["VpcId"])
    vpc = cloud.ec2.create_vpc(
        CidrBlock=VPC_CIDR, TagSpecifications=_spec_tags(run_id, "vpc", "vpc")
    )["Vpc"]
    vpc_id = str(vpc["VpcId"])
    ledger.add(f"VPC {vpc_id}", lambda: delete_vpc(cloud, vpc_id))
    return vpc_id


def _ensure_subnet(cloud: Cloud, run_id: str, spec: RunSpec, vpc_id: str, ledger: Ledger) -> str:
    found = _one(cloud.ec2.describe_subnets(Filters=run_filter(run_id))["Subnets"])
    if found:
        return str(found["SubnetId"])
    zone = pick_zone(cloud, {spec.worker_type, spec.master_type, spec.server_type})
    sub = cloud.ec2.create_subnet(
        VpcId=vpc_id,
        CidrBlock=SUBNET_CIDR,
        AvailabilityZone=zone,
        TagSpecifications=_spec_tags(run_id, "subnet", "subnet"),
    )["Subnet"]
    subnet_id = str(sub["SubnetId"])
    ledger.add(f"subnet {subnet_id} ({zone})", lambda: _delete_subnet(cloud, subnet_id))
    # Nodes need outbound HTTPS (PyPI, S3, SSM); a public address is far cheaper than a NAT
    # gateway, and no ingress rule lets anything in from outside.
    cloud.ec2.modify_subnet_attribute(SubnetId=subnet_id, MapPublicIpOnLaunch={"Value": True})
    return subnet_id


def _ensure_egress_route(
    cloud: Cloud, run_id: str, vpc_id: str, subnet_id: str, ledger: Ledger
) -> None:
    ec2 = cloud.ec2
    igw = _one(ec2.describe_internet_gateways(Filters=run_filter(run_id))["InternetGateways"])
    if igw is None:
        igw = ec2.create_internet_gateway(
            TagSpecifications=_spec_tags(run_id, "igw", "internet-gateway")
        )["InternetGateway"]
        igw_id = str(igw["InternetGatewayId"])
        ledger.add(f"internet gateway {igw_id}", lambda: _delete_igw(cloud, igw_id))
    igw_id = str(igw["InternetGatewayId"])
    if not any(a.get("VpcId") == vpc_id for a in igw.get("Attachments", [])):
        ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id)
    rt = _one(ec2.describe_route_tables(Filters=run_filter(run_id))["RouteTables"])
    if rt is None:
        rt = ec2.create_route_table(
            VpcId=vpc_id, TagSpecifications=_spec_tags(run_id, "routes", "route-table")
        )["RouteTable"]
        rt_id = str(rt["RouteTableId"])
        ledger.add(f"route table {rt_id}", lambda: _delete_route_table(cloud, rt_id))
    rt_id = str(rt["RouteTableId"])
    if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in rt.get("Routes", [])):
        ec2.create_route(RouteTableId=rt_id, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw_id)
    if not any(a.get("SubnetId") == subnet_id for a in rt.get("Associations", [])):
        ec2.associate_route_table(RouteTableId=rt_id, SubnetId=subnet_id)


def _ensure_group(cloud: Cloud, run_id: str, vpc_id: str, role: str, ledger: Ledger) -> str:
    gname = name(run_id, role)
    found = _one(
        cloud.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": [gname]},
            ]
        )["SecurityGroups"]
    )
    if found:
        return str(found["GroupId"])
    gid = str(
        cloud.ec2.create_security_group(
            GroupName=gname,
            Description=f"echoswarm run {run_id}: {role}",
            VpcId=vpc_id,
            TagSpecifications=_spec_tags(run_id, role, "security-group"),
        )["GroupId"]
    )
    ledger.add(f"security group {gid} ({role})", lambda: delete_groups(cloud, [gid]))
    # The default egress rules allow everything (IPv4, and IPv6 in a dual-stack VPC); replace
    # them with the explicit set below.
    for default in (
        {"IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
    ):
        ignore_missing(
            cloud.ec2.revoke_security_group_egress,
            GroupId=gid,
            IpPermissions=[{"IpProtocol": "-1", **default}],
            codes=("InvalidPermission.NotFound",),
        )
    return gid


def _tcp_from_group(port: int, group_id: str, why: str) -> dict[str, Any]:
    return {
        "IpProtocol": "tcp",
        "FromPort": port,
        "ToPort": port,
        "UserIdGroupPairs": [{"GroupId": group_id, "Description": why}],
    }


def intended_rules(spec: RunSpec, groups: dict[str, str]) -> dict[str, dict[str, list[Any]]]:
    """Every rule of every group: {role: {"ingress": [...], "egress": [...]}}."""
    w, m, s = groups["workers"], groups["master"], groups["servers"]
    ports = spec.server_ports()
    master_in = [_tcp_from_group(MASTER_PORT, w, "Locust ZeroMQ from workers")]
    if spec.allow_cidr:
        master_in.append(
            {
                "IpProtocol": "tcp",
                "FromPort": WEB_PORT,
                "ToPort": WEB_PORT,
                "IpRanges": [{"CidrIp": spec.allow_cidr, "Description": "Locust web UI"}],
            }
        )
    server_in = [_tcp_from_group(p, w, f"{k} echo from workers") for k, p in ports.items()]
    worker_out = [HTTPS_ANYWHERE, _tcp_from_group(MASTER_PORT, m, "Locust ZeroMQ to master")]
    worker_out += [_tcp_from_group(p, s, f"{k} echo to servers") for k, p in ports.items()]
    return {
        "workers": {"ingress": [], "egress": worker_out},
        "master": {"ingress": master_in, "egress": [HTTPS_ANYWHERE]},
        "servers": {"ingress": server_in, "egress": [HTTPS_ANYWHERE]},
    }


# Every kind of source a rule can have: (describe field, its key) — IPv4, IPv6, prefix lists
# and groups. A kind missing here would be invisible to the convergence below (and never revoked).
_SOURCES = (
    ("IpRanges", "CidrIp"),
    ("Ipv6Ranges", "CidrIpv6"),
    ("PrefixListIds", "PrefixListId"),
    ("UserIdGroupPairs", "GroupId"),
)


def _keys(perms: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """One entry per single rule: (protocol, from, to, source) → that rule alone."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for p in perms:
        base: dict[str, Any] = {k: p[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in p}
        key = (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"))
        for field, ident in _SOURCES:
            for src in p.get(field, []):
                out[(*key, src[ident])] = {**base, field: [{ident: src[ident]}]}
    return out


def _apply_rules(cloud: Cloud, group_id: str, rules: dict[str, list[Any]]) -> None:
    """Make the group's rules exactly ``rules``: add what is missing, revoke what is not
    intended (a second ``up`` with another ``--allow-cidr`` must not leave the old one open)."""
    ec2 = cloud.ec2
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    for direction, perms in rules.items():
        have = _keys(group["IpPermissions" if direction == "ingress" else "IpPermissionsEgress"])
        want = {next(iter(_keys([p]))): p for p in perms}  # each intended rule has one source
        authorize, revoke = (
            (ec2.authorize_security_group_ingress, ec2.revoke_security_group_ingress)
            if direction == "ingress"
            else (ec2.authorize_security_group_egress, ec2.revoke_security_group_egress)
        )
        for key, perm in want.items():
            if key not in have:
                ignore_missing(
                    authorize,
                    GroupId=group_id,
                    IpPermissions=[perm],
                    codes=("InvalidPermission.Duplicate",),
                )
        for key, perm in have.items():
            if key not in want:
                progress(f"  revoking unintended {direction} rule {key} of {group_id}")
                ignore_missing(
                    revoke,
                    GroupId=group_id,
                    IpPermissions=[perm],
                    codes=("InvalidPermission.NotFound",),
                )


# ---- teardown -------------------------------------------------------------------------------


def _retry_dependency(what: str, fn: Any, **kw: Any) -> None:
    """Delete, retrying while AWS still sees a dependency (ENIs of terminated instances)."""

    def attempt() -> tuple[bool, str]:
        try:
            ignore_missing(fn, codes=_GONE, **kw)
            return True, "deleted"
        except Exception as e:
            if error_code(e) == "DependencyViolation":
                return False, "still in use, retrying"
            raise

    poll(f"delete {what}", attempt, timeout=DEPENDENCY_TIMEOUT)


_GONE = (
    "InvalidGroup.NotFound",
    "InvalidSubnetID.NotFound",
    "InvalidVpcID.NotFound",
    "InvalidInternetGatewayID.NotFound",
    "InvalidRouteTableID.NotFound",
    "InvalidAssociationID.NotFound",
    "Gateway.NotAttached",
)


def delete_groups(cloud: Cloud, group_ids: list[str]) -> None:
    """Strip every rule first (groups reference each other), then delete each group."""
    ec2 = cloud.ec2
    for gid in group_ids:
        found = ignore_missing(ec2.describe_security_groups, GroupIds=[gid], codes=_GONE)
        if not found:
            continue
        g = found["SecurityGroups"][0]
        if g.get("IpPermissions"):
            ignore_missing(
                ec2.revoke_security_group_ingress,
                GroupId=gid,
                IpPermissions=_clean(g["IpPermissions"]),
                codes=_GONE + ("InvalidPermission.NotFound",),
            )
        if g.get("IpPermissionsEgress"):
            ignore_missing(
                ec2.revoke_security_group_egress,
                GroupId=gid,
                IpPermissions=_clean(g["IpPermissionsEgress"]),
                codes=_GONE + ("InvalidPermission.NotFound",),
            )
    for gid in group_ids:
        _retry_dependency(f"security group {gid}", ec2.delete_security_group, GroupId=gid)


def _clean(perms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """describe_* output → revoke input (sources carry extra fields revoke does not accept)."""
    out = []
    for p in perms:
        q = {k: v for k, v in p.items() if k in ("IpProtocol", "FromPort", "ToPort")}
        for field, ident in _SOURCES:
            if p.get(field):
                q[field] = [{ident: src[ident]} for src in p[field]]
        out.append(q)
    return out


def _delete_subnet(cloud: Cloud, subnet_id: str) -> None:
    _retry_dependency(f"subnet {subnet_id}", cloud.ec2.delete_subnet, SubnetId=subnet_id)


def _delete_igw(cloud: Cloud, igw_id: str) -> None:
    found = ignore_missing(
        cloud.ec2.describe_internet_gateways, InternetGatewayIds=[igw_id], codes=_GONE
    )
    for igw in found["InternetGateways"] if found else []:
        for att in igw.get("Attachments", []):
            _retry_dependency(
                f"internet gateway {igw_id} attachment",
                cloud.ec2.detach_internet_gateway,
                InternetGatewayId=igw_id,
                VpcId=att["VpcId"],
            )
    ignore_missing(cloud.ec2.delete_internet_gateway, InternetGatewayId=igw_id, codes=_GONE)


def _delete_route_table(cloud: Cloud, rt_id: str) -> None:
    found = ignore_missing(cloud.ec2.describe_route_tables, RouteTableIds=[rt_id], codes=_GONE)
    for rt in found["RouteTables"] if found else []:
        for a in rt.get("Associations", []):
            if not a.get("Main"):
                ignore_missing(
                    cloud.ec2.disassociate_route_table,
                    AssociationId=a["RouteTableAssociationId"],
                    codes=_GONE,
                )
    ignore_missing(cloud.ec2.delete_route_table, RouteTableId=rt_id, codes=_GONE)


def delete_vpc(cloud: Cloud, vpc_id: str) -> None:
    _retry_dependency(f"VPC {vpc_id}", cloud.ec2.delete_vpc, VpcId=vpc_id)


def destroy_network(cloud: Cloud, run_id: str) -> int:
    """Delete every network piece tagged with the run, in dependency order (instances gone);
    returns how many pieces there were."""
    ec2 = cloud.ec2
    f = run_filter(run_id)
    gids = [g["GroupId"] for g in ec2.describe_security_groups(Filters=f)["SecurityGroups"]]
    if gids:
        progress(f"  deleting {len(gids)} security group(s)")
        delete_groups(cloud, gids)
    n = len(gids)
    for s in ec2.describe_subnets(Filters=f)["Subnets"]:
        _delete_subnet(cloud, s["SubnetId"])
        n += 1
    for rt in ec2.describe_route_tables(Filters=f)["RouteTables"]:
        _delete_route_table(cloud, rt["RouteTableId"])
        n += 1
    for igw in ec2.describe_internet_gateways(Filters=f)["InternetGateways"]:
        _delete_igw(cloud, igw["InternetGatewayId"])
        n += 1
    for v in ec2.describe_vpcs(Filters=f)["Vpcs"]:
        delete_vpc(cloud, v["VpcId"])
        n += 1
    return n
