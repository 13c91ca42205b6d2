"""What a node boots with: the user-data is valid cloud-config by cloud-init's own schema
(Debian's package, unpacked into build/ by scripts/sysdeps.sh), the systemd units pass
``systemd-analyze verify`` without a single warning, and the commands the units run are exactly
what :mod:`echoswarm.orchestrate.commands` gives the local orchestrator."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from echoswarm.orchestrate import commands
from infra import guard, userdata
from tests.conftest import require_tool
from tests.infra_fixtures import fake_systemd, run_with_fake_systemd
from tests.procs import ROOT, env

pytestmark = pytest.mark.timeout(60)
CLOUD_INIT = ROOT / "build" / "cloud-init" / "usr" / "lib" / "python3" / "dist-packages"
SERVERS = {"grpc": 50051, "ws": 8765, "tcp": 7777}
VALIDATE = """
import sys
sys.path.insert(0, sys.argv[1])
from cloudinit.config.schema import SchemaValidationError, get_schema, validate_cloudconfig_file
bad = 0
for path in sys.argv[2:]:
    try:
        validate_cloudconfig_file(path, get_schema())
    except SchemaValidationError as e:
        print(f"{path}: {e}")
        bad += 1
sys.exit(1 if bad else 0)
"""


EXPIRES = 1_795_000_000


def rendered(role: str) -> str:
    return userdata.cloud_config(
        role,
        "20261122-000000-abcd",
        bucket="echoswarm-123456789012-20261122-000000-abcd",
        region="ap-northeast-1",
        lifetime_minutes=120,
        expires_epoch=EXPIRES,
        master_host="10.77.1.9",
        servers=SERVERS,
    )


def cloud_init_validate(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    if not (CLOUD_INIT / "cloudinit").is_dir():
        message = "cloud-init not unpacked in build/ (run scripts/sysdeps.sh)"
        if os.environ.get("ECHOSWARM_REQUIRE_SYSDEPS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    argv = [sys.executable, "-c", VALIDATE, str(CLOUD_INIT), *map(str, paths)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_user_data_is_valid_cloud_config_by_cloud_inits_schema(tmp_path: Path) -> None:
    paths = []
    for role in ("server", "master", "worker"):
        p = tmp_path / f"{role}.yaml"
        p.write_text(rendered(role))
        paths.append(p)
        assert len(p.read_bytes()) < 16384  # EC2's user-data limit
    good = cloud_init_validate(paths)
    assert good.returncode == 0, good.stdout + good.stderr
    # The validator does reject a wrong document (so the pass above means something).
    broken = json.loads(rendered("worker").split("\n", 1)[1])
    broken["packages"] = 5
    broken["runcmd"] = "not a list"
    bad = tmp_path / "broken.yaml"
    bad.write_text("#cloud-config\n" + json.dumps(broken))
    result = cloud_init_validate([bad])
    assert result.returncode == 1 and "packages" in result.stdout, result.stdout + result.stderr


def test_user_data_boot_steps() -> None:
    doc = json.loads(rendered("worker").split("\n", 1)[1])
    assert doc["bootcmd"] == [["sh", "-c", guard.guard_script(120, EXPIRES)]]  # first thing
    run = [" ".join(c) for c in doc["runcmd"]]
    assert any(
        c.startswith("aws s3 cp s3://echoswarm-123456789012-20261122-000000-abcd/code/")
        for c in run
    )
    assert any("-m infra.node --role setup" in c for c in run)
    assert run[-1] == "systemctl enable --now echoswarm-worker.service"
    paths = [f["path"] for f in doc["write_files"]]
    assert "/etc/systemd/system/echoswarm-worker.service" in paths
    server = json.loads(rendered("server").split("\n", 1)[1])
    assert server["runcmd"][-1] == ["systemctl", "enable", "--now"] + [
        f"echoswarm-server-{k}.service" for k in SERVERS
    ]
    master = json.loads(rendered("master").split("\n", 1)[1])
    assert not any("enable" in c for c in master["runcmd"][-1])  # started per test by `run`


def _all_units() -> dict[str, str]:
    out: dict[str, str] = {}
    for role in ("server", "master", "worker"):
        out.update(userdata.units(role, "r1", master_host="10.77.1.9", servers=SERVERS))
    return out


def _exec_start(text: str) -> list[str]:
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_units_pass_systemd_analyze_verify_without_warnings(tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze")
    units = _all_units()
    assert sorted(units) == [
        "echoswarm-master.service",
        "echoswarm-server-grpc.service",
        "echoswarm-server-tcp.service",
        "echoswarm-server-ws.service",
        "echoswarm-worker.service",
    ]
    units.update(guard.guard_units(120))  # what systemd-run creates at boot, as files
    for name, text in units.items():
        # The node's paths do not exist here: point them at this machine's, keep the rest.
        local = text.replace(userdata.VENV_DIR + "/bin/python", sys.executable)
        local = local.replace(userdata.CODE_DIR, str(ROOT))
        (tmp_path / name).write_text(local)
    paths = [str(tmp_path / n) for n in units]
    r = subprocess.run([tool, "verify", *paths], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    (tmp_path / "bad.service").write_text("[Service]\nExecStart=/bin/true\nRestart=sometimes\n")
    r = subprocess.run(
        [tool, "verify", str(tmp_path / "bad.service")], capture_output=True, text=True, timeout=60
    )
    assert "restart specifier" in r.stderr  # the checker does see a malformed unit


def _node_argv(unit_argv: list[str]) -> list[str]:
    """Run the unit's own command with --print-argv (local python instead of the venv's)."""
    assert unit_argv[0] == userdata.VENV_DIR + "/bin/python"
    argv = [sys.executable, *unit_argv[1:], "--print-argv"]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env(), timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_units_run_exactly_the_commands_of_echoswarm_commands(tmp_path: Path) -> None:
    py = sys.executable
    units = _all_units()
    for kind, port in SERVERS.items():
        got = _node_argv(_exec_start(units[f"echoswarm-server-{kind}.service"]))
        assert got == commands.server_argv(kind, host="0.0.0.0", port=port, python=py)
    got = _node_argv(_exec_start(units["echoswarm-worker.service"]))
    procs = os.cpu_count() or 1
    assert got == commands.worker_argv(
        "-", master_host="10.77.1.9", processes=procs if procs > 1 else None, python=py
    )
    # The master's config is written by `run`; give the unit's command one.
    master = _exec_start(units["echoswarm-master.service"])
    assert master[-2:] == ["--config", userdata.MASTER_CONFIG]
    cfg = {
        "locustfile": "tests/infra_scenario.py",
        "users": 8,
        "spawn_rate": 4,
        "run_time": "30s",
        "expect_workers": 3,
        "results_dir": "/var/lib/echoswarm/results/r1",
        "servers": [{"kind": "ws", "option": "--ws-url", "host": "10.77.1.7", "port": 8765}],
        "extra": ["--frame-bytes", "3200"],
    }
    (tmp_path / "run.json").write_text(json.dumps(cfg))
    got = _node_argv([*master[:-1], str(tmp_path / "run.json")])
    assert got == commands.master_argv(
        "tests/infra_scenario.py",
        expect_workers=3,
        users=8,
        spawn_rate=4,
        run_time="30s",
        results_dir="/var/lib/echoswarm/results/r1",
        bind_host="0.0.0.0",
        extra=["--ws-url", "ws://10.77.1.7:8765/echo", "--enable-rebalancing"]
        + ["--frame-bytes", "3200"],
        python=py,
    )
    (tmp_path / "run.json").write_text(json.dumps({**cfg, "web": True}))
    got = _node_argv([*master[:-1], str(tmp_path / "run.json")])
    assert got == commands.master_argv(
        "tests/infra_scenario.py",
        expect_workers=3,
        users=8,
        spawn_rate=4,
        run_time="30s",
        results_dir="/var/lib/echoswarm/results/r1",
        bind_host="0.0.0.0",
        web=True,
        web_host="127.0.0.1",  # loopback unless the config says otherwise
        extra=["--ws-url", "ws://10.77.1.7:8765/echo", "--enable-rebalancing", "--autoquit", "60"]
        + ["--frame-bytes", "3200"],
        python=py,
    )


def test_node_bootstrap_needs_only_the_standard_library() -> None:
    """cloud-init runs ``python3.11 -m infra.node --role setup`` before any package exists:
    with site-packages switched off (-S) the module must still import and parse its roles."""
    argv = [sys.executable, "-S", "-m", "infra.node", "--role", "server", "--kind", "tcp"]
    r = subprocess.run(
        [*argv, "--port", "7777", "--print-argv"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        env={"PATH": os.environ.get("PATH", "")},
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[2:] == ["servers", "tcp", "--host", "0.0.0.0", "--port", "7777"]


def test_lifetime_guard_is_set_through_pid1_checked_and_fails_safe(tmp_path: Path) -> None:
    """The bootcmd script, run by sh with stand-ins for systemd's tools: the timer is asked of
    PID 1 (systemd-run) for the time left to the launch's deadline, capped at the lifetime,
    then checked; no timer → power off now; deadline passed → power off without one."""
    bin_dir = fake_systemd(tmp_path / "bin")
    now = int(time.time())

    def boot(expires: int, **fake: str) -> tuple[subprocess.CompletedProcess[str], str]:
        log = tmp_path / f"log-{len(list(tmp_path.glob('log-*')))}"
        log.touch()
        r = run_with_fake_systemd(guard.guard_script(120, expires), bin_dir, log, **fake)
        return r, log.read_text()

    r, calls = boot(now + 3600)
    assert r.returncode == 0, r.stderr
    (run,) = [c for c in calls.splitlines() if c.startswith("systemd-run ")]
    left = int(re.search(r"--on-active=(\d+)s ", run).group(1))  # type: ignore[union-attr]
    assert 3590 <= left <= 3600
    assert "--unit=echoswarm-lifetime " in run and "--timer-property=AccuracySec=1s" in run
    assert run.endswith("/usr/bin/systemctl --no-block poweroff")
    assert "systemctl is-active --quiet echoswarm-lifetime.timer" in calls
    assert "poweroff" not in calls.replace(run, "")  # checked, and not powering off now

    r, calls = boot(now + 10 * 86400)  # a clock far behind the deadline: the lifetime caps it
    assert "--on-active=7200s " in calls

    r, calls = boot(now + 3600, run_rc="1", timer="inactive")  # PID 1 did not take the timer
    assert "could not be set: powering off now" in r.stderr
    assert calls.splitlines()[-1] == "systemctl --no-block poweroff"

    r, calls = boot(now - 60)  # rebooted after the deadline
    assert "already reached" in r.stderr
    assert calls.splitlines() == ["systemctl --no-block poweroff"]


def test_guard_report_reads_pid1s_timer(tmp_path: Path) -> None:
    bin_dir = fake_systemd(tmp_path / "bin")
    log = tmp_path / "log"
    r = run_with_fake_systemd(guard.GUARD_REPORT, bin_dir, log, left_s="5400")
    g = guard.parse_guard(r.stdout)
    assert g.answered and g.active and g.ends is not None, r.stdout
    assert abs((g.ends - datetime.now(UTC)).total_seconds() - 5400) < 60
    r = run_with_fake_systemd(guard.GUARD_REPORT, bin_dir, log, timer="inactive")
    assert guard.parse_guard(r.stdout) == guard.Guard(True, False, None, "timer inactive")
    assert guard.parse_guard("") == guard.Guard(False, note="no report")
