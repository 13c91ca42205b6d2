"""What a run is: the validated ``up`` arguments, the run id, resource names, tags and ports.

Everything here is offline and pure, so ``plan`` and the argument checks need no network.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from echoswarm.orchestrate.commands import DEFAULT_MASTER_PORT, DEFAULT_SERVER_PORTS, SERVER_KINDS

DEFAULT_REGION = "ap-northeast-1"
TAG_RUN = "echoswarm:run"
TAG_ROLE = "echoswarm:role"
TAG_CREATED = "echoswarm:created"
TAG_EXPIRES = "echoswarm:expires"
TAG_REGION = "echoswarm:region"
TAG_PROJECT = "echoswarm"
VPC_CIDR = "10.77.0.0/16"
SUBNET_CIDR = "10.77.1.0/24"
WEB_PORT = 8089
MASTER_PORT = DEFAULT_MASTER_PORT
RUN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,30}[a-z0-9]$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
LIFETIME_RE = re.compile(r"^(\d+)([mh])$")
MAX_LIFETIME_MINUTES = 24 * 60
MAX_WORKERS = 100
MIN_WEB_PREFIX = 24  # --allow-cidr wider than this needs --allow-wide-cidr


class UsageError(Exception):
    """A user mistake caught before anything is created (exit 2)."""


class InfraError(Exception):
    """Something AWS refused or that went wrong while acting (exit 1)."""


@dataclass(frozen=True)
class RunSpec:
    """The shape of a run (what ``up`` creates); stored in the state file and in plan output."""

    workers: int = 2
    worker_type: str = "c7i.large"
    master_type: str = "c7i.large"
    server_type: str = "c7i.xlarge"
    servers: tuple[str, ...] = SERVER_KINDS
    spot: bool = False
    max_lifetime_minutes: int = 120
    allow_cidr: str | None = None
    subnet_id: str | None = None

    def server_ports(self) -> dict[str, int]:
        return {kind: DEFAULT_SERVER_PORTS[kind] for kind in self.servers}

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["servers"] = list(self.servers)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunSpec:
        d = dict(d)
        d["servers"] = tuple(d.get("servers", SERVER_KINDS))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def parse_lifetime(text: str) -> int:
    """``2h`` / ``90m`` → minutes (1 minute .. 24 hours)."""
    m = LIFETIME_RE.match(text.strip())
    if not m:
        raise UsageError(f"--max-lifetime {text!r}: expected e.g. 90m or 2h")
    minutes = int(m.group(1)) * (60 if m.group(2) == "h" else 1)
    if not 1 <= minutes <= MAX_LIFETIME_MINUTES:
        raise UsageError(f"--max-lifetime {text!r}: must be between 1m and 24h")
    return minutes


def parse_cidr(text: str, *, wide_ok: bool = False) -> str:
    """A valid IPv4 CIDR for direct web-UI access: never the whole internet, and nothing wider
    than ``MIN_WEB_PREFIX`` (/24) unless ``wide_ok`` (``--allow-wide-cidr``): the UI has no
    login."""
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as e:
        raise UsageError(f"--allow-cidr {text!r}: not a valid IPv4 CIDR ({e})") from None
    if net.prefixlen == 0:
        raise UsageError("--allow-cidr 0.0.0.0/0 would open the web UI to the internet; refused")
    if net.prefixlen < MIN_WEB_PREFIX and not wide_ok:
        raise UsageError(
            f"--allow-cidr {text}: {net.num_addresses:,} addresses could open the login-less web"
            f" UI; narrow it to /{MIN_WEB_PREFIX} or more, or add --allow-wide-cidr"
        )
    return str(net)


def parse_servers(text: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    bad = [k for k in kinds if k not in SERVER_KINDS]
    if bad or not kinds:
        raise UsageError(f"--servers {text!r}: expected a comma list of {','.join(SERVER_KINDS)}")
    return kinds


def check_instance_type(text: str, flag: str) -> str:
    if not INSTANCE_TYPE_RE.match(text):
        raise UsageError(f"{flag} {text!r}: not an instance type (e.g. c7i.large)")
    return text


def check_run_id(text: str) -> str:
    if not RUN_ID_RE.match(text):
        raise UsageError(
            f"--run-id {text!r}: 4-32 characters of a-z, 0-9 and '-' (it names S3 and IAM things)"
        )
    return text


def new_run_id(now: float | None = None) -> str:
    """``YYYYMMDD-HHMMSS-xxxx`` in UTC: sorts by time, unique enough, valid in bucket names."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}-{secrets.token_hex(2)}"


def name(run_id: str, what: str) -> str:
    return f"echoswarm-{run_id}-{what}"


def bucket_name(account: str, run_id: str) -> str:
    """Globally unique, owned by one run; ≤ 63 characters for any valid run id."""
    return f"echoswarm-{account}-{run_id}"


def code_key(run_id: str) -> str:
    return f"code/{run_id}.tar.gz"


def results_prefix(run_id: str) -> str:
    return f"results/{run_id}/"


def tags(run_id: str, what: str, *, role: str | None = None, **more: str) -> list[dict[str, str]]:
    """The tag set of every resource: the project, the run, when, and a readable Name."""
    out = {
        TAG_PROJECT: "true",
        TAG_RUN: run_id,
        TAG_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "Name": name(run_id, what),
    }
    if role:
        out[TAG_ROLE] = role
    out.update(more)
    return [{"Key": k, "Value": v} for k, v in out.items()]


def run_filter(run_id: str) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{TAG_RUN}", "Values": [run_id]}]
