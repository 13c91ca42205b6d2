"""Render a node's ``#cloud-config`` user-data and its systemd units.

Boot order on a node: ``bootcmd`` sets the max-lifetime guard first thing, on every boot;
``packages`` installs Python 3.11; ``write_files`` drops the units and configs; ``runcmd`` pulls
the code tarball from the run's bucket (AWS CLI, preinstalled on Amazon Linux 2023), runs
``python -m infra.node --role setup`` (venv + pinned requirements), then starts the role's
units. The document is emitted as JSON, which is valid YAML. The lifetime guard and why it is
built the way it is: :mod:`infra.guard`.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from string import Template
from typing import Any

from infra.guard import guard_script
from infra.node import CODE_DIR, VENV_DIR
from infra.spec import MASTER_PORT, code_key

TEMPLATES = Path(__file__).resolve().parent / "templates"
UNIT_DIR = "/etc/systemd/system"
CONF_DIR = "/etc/echoswarm"
PACKAGES = ["python3.11", "python3.11-pip", "tar", "gzip"]
# The jobs server (S004) starts its own Redis: Amazon Linux 2023 ships it as redis6
# (binary redis6-server, which servers.jobs looks for after redis-server).
SERVER_PACKAGES = {"jobs": ["redis6"]}
SYSTEM_PYTHON = "python3.11"
NODE = [f"{VENV_DIR}/bin/python", "-m", "infra.node"]
MASTER_CONFIG = f"{CONF_DIR}/master-run.json"
MASTER_UNIT = "echoswarm-master.service"


def server_unit_name(kind: str) -> str:
    return f"echoswarm-server-{kind}.service"


def server_config_path(kind: str) -> str:
    return f"{CONF_DIR}/server-{kind}.json"


def _unit(template: str, exec_start: list[str], **values: str) -> str:
    text = (TEMPLATES / template).read_text()
    return Template(text).substitute(exec_start=shlex.join(exec_start), code_dir=CODE_DIR, **values)


def units(
    role: str,
    run_id: str,
    *,
    master_host: str = "",
    servers: dict[str, int] | None = None,
) -> dict[str, str]:
    """{unit file name: content} for one node role."""
    if role == "server":
        out = {}
        for kind, port in (servers or {}).items():
            cmd = [*NODE, "--role", "server", "--kind", kind, "--port", str(port)]
            cmd += ["--config", server_config_path(kind)]
            out[server_unit_name(kind)] = _unit(
                "echoswarm-server.service", cmd, kind=kind, run_id=run_id
            )
        return out
    if role == "worker":
        cmd = [*NODE, "--role", "worker", "--master-host", master_host]
        cmd += ["--master-port", str(MASTER_PORT), "--processes", "auto"]
        return {
            "echoswarm-worker.service": _unit(
                "echoswarm-worker.service", cmd, run_id=run_id, master_host=master_host
            )
        }
    if role == "master":
        cmd = [*NODE, "--role", "master", "--config", MASTER_CONFIG]
        return {MASTER_UNIT: _unit("echoswarm-master.service", cmd, run_id=run_id)}
    raise ValueError(f"unknown role {role!r}")


def _server_packages(servers: dict[str, int] | None) -> list[str]:
    return [p for kind in servers or {} for p in SERVER_PACKAGES.get(kind, [])]


def cloud_config(
    role: str,
    run_id: str,
    *,
    bucket: str,
    region: str,
    lifetime_minutes: int,
    expires_epoch: int,
    master_host: str = "",
    servers: dict[str, int] | None = None,
) -> str:
    """The whole user-data document for one node."""
    role_units = units(role, run_id, master_host=master_host, servers=servers)
    files: list[dict[str, Any]] = [
        {"path": f"{UNIT_DIR}/{n}", "permissions": "0644", "content": text}
        for n, text in role_units.items()
    ]
    node = {"run_id": run_id, "role": role, "bucket": bucket, "region": region}
    files.append(
        {"path": f"{CONF_DIR}/node.json", "permissions": "0644", "content": json.dumps(node)}
    )
    tarball = "/opt/echoswarm/code.tar.gz"
    runcmd: list[list[str]] = [
        ["mkdir", "-p", CODE_DIR],
        ["aws", "s3", "cp", f"s3://{bucket}/{code_key(run_id)}", tarball, "--region", region],
        ["tar", "-xzf", tarball, "-C", CODE_DIR],
        ["sh", "-c", f"cd {CODE_DIR} && {SYSTEM_PYTHON} -m infra.node --role setup"],
        ["systemctl", "daemon-reload"],
    ]
    startable = [n for n in role_units if n != MASTER_UNIT]  # the master starts per test
    if startable:
        runcmd.append(["systemctl", "enable", "--now", *startable])
    doc = {
        "bootcmd": [["sh", "-c", guard_script(lifetime_minutes, expires_epoch)]],
        "package_update": False,
        "packages": PACKAGES + (_server_packages(servers) if role == "server" else []),
        "write_files": files,
        "runcmd": runcmd,
    }
    return "#cloud-config\n" + json.dumps(doc, indent=1) + "\n"
