"""``python -m infra``: failures are caught before anything exists (one line, exit 2 for usage),
a failure half way through ``up`` rolls back everything it created, and ``sweep`` finds and
removes leftovers. All against the local moto server."""

from __future__ import annotations

import pytest

from infra import state
from tests.infra_fixtures import (
    aws,  # noqa: F401  (fixture)
    infra,
    leftovers,
    loopback_only,  # noqa: F401  (fixture)
    moto_url,  # noqa: F401  (fixture)
    snapshot,
)

pytestmark = pytest.mark.timeout(60)


USAGE_ERRORS = [
    (["up", "--allow-cidr", "10.0.0.300/8"], "not a valid IPv4 CIDR"),
    (["up", "--allow-cidr", "0.0.0.0/0"], "refused"),
    (["up", "--allow-cidr", "0.0.0.0/1"], "--allow-wide-cidr"),
    (["up", "--allow-cidr", "10.0.0.0/8"], "--allow-wide-cidr"),
    (["up", "--allow-cidr", "0.0.0.0/0", "--allow-wide-cidr"], "refused"),
    (["up", "--max-lifetime", "3d"], "--max-lifetime"),
    (["up", "--servers", "grpc,http"], "--servers"),
    (["up", "--workers", "0"], "--workers"),
    (["up", "--worker-type", "huge"], "not an instance type"),
    (["up", "--region", "mars-north-1"], "not an AWS region"),
    (["up", "--run-id", "Bad_ID"], "--run-id"),
    (["up", "--frobnicate"], "unrecognized arguments"),
    (["status"], "no run"),
    (["down", "--", "x"], "unexpected arguments"),
    (["sweep", "--older-than", "soon"], "--older-than"),
]


def test_usage_errors_are_one_line_exit_2_and_create_nothing(aws: str) -> None:  # noqa: F811
    before = snapshot()
    for argv, needle in USAGE_ERRORS:
        r = infra(*argv)
        assert r.rc == 2, (argv, r.err)
        assert len(r.err.strip().splitlines()) == 1, (argv, r.err)
        assert needle in r.err, (argv, r.err)
    # A run id that was never started: nothing to run on (one line, non-zero).
    r = infra(
        "run", "tests/infra_scenario.py", "-u", "1", "-r", "1", "-t", "1s", "--run-id", "abcd"
    )
    assert r.rc == 1 and len(r.err.strip().splitlines()) == 1, r.err
    assert snapshot() == before


def test_unknown_instance_type_is_refused_before_anything_exists(aws: str) -> None:  # noqa: F811
    before = snapshot()
    r = infra("up", "--worker-type", "c7i.enormous")
    assert r.rc == 1
    assert "c7i.enormous" in r.err.strip().splitlines()[-1]
    assert snapshot() == before


def test_no_credentials_is_one_clear_line(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    before = snapshot()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    r = infra("up")
    assert r.rc == 1
    assert "no AWS credentials" in r.err.strip().splitlines()[-1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert snapshot() == before


@pytest.mark.usefixtures("loopback_only")
def test_a_wide_web_cidr_needs_its_own_flag(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # plan is offline
    ok = infra("plan", "--allow-cidr", "198.51.100.0/24")
    assert ok.rc == 0 and "8089 from 198.51.100.0/24" in ok.out, ok.err
    wide = infra("plan", "--allow-cidr", "10.0.0.0/8", "--allow-wide-cidr")
    assert wide.rc == 0 and "8089 from 10.0.0.0/8" in wide.out, wide.err
    none = infra("plan")
    assert none.rc == 0 and "web UI only through an SSM port forward" in none.out, none.out


@pytest.mark.usefixtures("loopback_only")
def test_plan_needs_no_network(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("ECHOSWARM_STATE_FILE", str(tmp_path / "state.json"))
    r = infra("plan", "--workers", "3", "--spot", "--allow-cidr", "198.51.100.7/32")
    assert r.rc == 0, r.err
    for needle in (
        "VPC 10.77.0.0/16",
        "security group workers: no ingress",
        "master: 5557 from workers; 8089 from 198.51.100.7/32",
        "servers: grpc 50051, ws 8765, tcp 7777 from workers",
        "IMDSv2 required",
        "3 × worker c7i.large spot",
        "estimated cost: $",
        "prices of 20",
    ):
        assert needle in r.out, (needle, r.out)
    assert not (tmp_path / "state.json").exists()


def test_failure_half_way_rolls_back_everything(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The third launch (the workers) is refused by EC2 → nothing of the run may remain."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend

    real = InstanceBackend.run_instances
    calls = []

    def refuse_workers(self, *args, **kwargs):  # runs inside the moto server
        calls.append(1)
        if len(calls) == 3:
            raise EC2ClientError("InsufficientInstanceCapacity", "injected: no capacity")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(InstanceBackend, "run_instances", refuse_workers)
    before = snapshot()
    r = infra("up", "--workers", "3")
    assert r.rc == 1
    last = r.err.strip().splitlines()[-1]
    assert "up failed" in last and "InsufficientInstanceCapacity" in last, r.err
    assert "NOT rolled back" not in last
    run_id = state.load()["last_run"]
    assert run_id and run_id in r.err
    assert len(calls) == 3
    assert leftovers(run_id) == {}
    assert snapshot() == before


def test_sweep_lists_then_removes_old_runs(aws: str) -> None:  # noqa: F811
    r = infra("up", "--workers", "1")
    assert r.rc == 0, r.err
    run_id = r.out.strip().splitlines()[-1]
    young = infra("sweep", "--older-than", "2d")
    assert young.rc == 0 and run_id not in young.out
    listed = infra("sweep", "--older-than", "0")
    assert listed.rc == 0 and run_id in listed.out and "--yes" in listed.err
    assert "instances" in leftovers(run_id)  # listing removes nothing
    gone = infra("sweep", "--older-than", "0", "--yes")
    assert gone.rc == 0, gone.err
    assert leftovers(run_id) == {"buckets": [f"echoswarm-123456789012-{run_id}"]}
    assert infra("sweep", "--older-than", "0").out == ""  # a kept bucket is not a leftover ...
    purged = infra("sweep", "--older-than", "0", "--yes", "--purge")  # ... unless purging
    assert purged.rc == 0 and run_id in purged.out, purged.err
    assert leftovers(run_id) == {}


def test_missing_permission_found_by_dry_run_before_anything_exists(
    aws: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EC2 answers the DryRun RunInstances with UnauthorizedOperation (as for a user without
    ec2:RunInstances): one line naming it, exit 1, nothing created."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses.instances import InstanceResponse

    real = InstanceResponse.run_instances

    def unauthorized(self):  # runs inside the moto server
        if self._get_param("DryRun", False):
            raise EC2ClientError("UnauthorizedOperation", "You are not authorized (injected)")
        return real(self)

    monkeypatch.setattr(InstanceResponse, "run_instances", unauthorized)
    before = snapshot()
    r = infra("up")
    assert r.rc == 1
    last = r.err.strip().splitlines()[-1]
    assert "missing permission" in last and "UnauthorizedOperation" in last, r.err
    assert snapshot() == before


def test_unknown_profile_is_a_usage_error(aws: str) -> None:  # noqa: F811
    r = infra("up", "--profile", "no-such-profile")
    assert r.rc == 2
    assert len(r.err.strip().splitlines()) == 1 and "no-such-profile" in r.err, r.err


def test_down_cleans_up_after_a_partial_up_that_could_not_roll_back(
    aws: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As if ``up`` died half way (killed, laptop closed): the run's tags let ``down`` find
    and remove what exists, whatever step it stopped at."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend

    from infra.ledger import Ledger

    real = InstanceBackend.run_instances
    calls = []

    def refuse_master(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise EC2ClientError("InsufficientInstanceCapacity", "injected")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(InstanceBackend, "run_instances", refuse_master)
    monkeypatch.setattr(Ledger, "rollback", lambda self: [])  # the process "died": no undo
    assert infra("up", "--workers", "1").rc == 1
    run_id = state.load()["last_run"]
    left = leftovers(run_id)
    assert {"instances", "groups", "vpcs", "roles", "buckets"} <= set(left), left
    monkeypatch.setattr(InstanceBackend, "run_instances", real)
    d = infra("down", "--purge")
    assert d.rc == 0, d.err
    assert leftovers(run_id) == {}


def test_entry_point_exit_codes(aws: str) -> None:  # noqa: F811
    """The real ``python -m infra`` process: 0 for plan, 2 and one line for a usage error."""
    import subprocess
    import sys

    from tests.procs import ROOT, env

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "infra", *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env(),
            timeout=60,
        )

    ok = run("plan", "--workers", "1")
    assert ok.returncode == 0 and "estimated cost" in ok.stdout, ok.stderr
    bad = run("up", "--allow-cidr", "nonsense")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


# ---- issue 11: bounds, the state file, local checks (items 8, 9, 13) --------------------------

RUN = ["run", "tests/infra_scenario.py", "--run-id", "abcd"]
BOUNDS = [
    ([*RUN, "-u", "0", "-r", "1", "-t", "10s"], "-u"),
    ([*RUN, "-u", "2000000", "-r", "1", "-t", "10s"], "-u"),
    ([*RUN, "-u", "5", "-r", "nan", "-t", "10s"], "-r"),
    ([*RUN, "-u", "5", "-r", "inf", "-t", "10s"], "-r"),
    ([*RUN, "-u", "5", "-r", "0", "-t", "10s"], "-r"),
    ([*RUN, "-u", "5", "-r", "1", "-t", "0s"], "-t"),
    ([*RUN, "-u", "5", "-r", "1", "-t", "25h"], "-t"),
    ([*RUN, "-u", "5", "-r", "1", "-t", "99999999999999999999h"], "-t"),
    (["run", "no/such.py", "--run-id", "abcd", "-u", "1", "-r", "1", "-t", "1s"], "no such"),
    (["up", "--workers", "100000"], "--workers"),
    (["up", "--workers", "1e3"], "--workers"),
    (["up", "--max-lifetime", "0m"], "--max-lifetime"),
    (["up", "--max-lifetime", "99999999999999999999h"], "--max-lifetime"),
    (["sweep", "--older-than", "99999999999d"], "--older-than"),
    (["plan", "--region", "mars-1"], "not an AWS region"),
]


@pytest.mark.usefixtures("loopback_only")
def test_numeric_flags_are_bounded_and_checked_before_any_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """Nothing listens at the endpoint: every one of these must be refused locally, exit 2."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("ECHOSWARM_STATE_FILE", str(tmp_path / "state.json"))
    for argv, needle in BOUNDS:
        r = infra(*argv)
        assert r.rc == 2, (argv, r.rc, r.err)
        assert len(r.err.strip().splitlines()) == 1, (argv, r.err)
        assert needle in r.err, (argv, r.err)
    assert not (tmp_path / "state.json").exists()


def test_node_flags_are_bounded_one_line_exit_2() -> None:
    import subprocess
    import sys

    from tests.procs import ROOT, env

    for argv, needle in (
        (["--role", "server", "--kind", "tcp", "--port", "70000"], "--port"),
        (["--role", "worker", "--master-host", "10.0.0.1", "--master-port", "-5"], "--master-port"),
        (["--role", "worker", "--master-host", "10.0.0.1", "--processes", "abc"], "--processes"),
        (["--role", "worker", "--master-host", "10.0.0.1", "--processes", "0"], "--processes"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "infra.node", *argv, "--print-argv"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env(),
            timeout=30,
        )
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, (argv, r.stderr)


@pytest.mark.parametrize(
    "content", ["[]", '{"runs": []}', '{"runs": {"x": 5}, "last_run": "x"}', "{", '"text"']
)
def test_a_malformed_state_file_is_one_line(aws: str, content: str, tmp_path) -> None:  # noqa: F811
    state.path().write_text(content)
    for argv in (["status"], ["down"], ["up", "--workers", "1"]):
        r = infra(*argv)
        assert r.rc == 2, (argv, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and "state file" in lines[0], (argv, r.err)
        assert str(state.path()) in lines[0]


def test_an_unwritable_state_file_is_refused_before_anything_exists(
    aws: str,  # noqa: F811
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ECHOSWARM_STATE_FILE", str(blocker / "state.json"))
    before = snapshot()
    for argv in (["up", "--workers", "1"], ["down", "--run-id", "abcd"]):
        r = infra(*argv)
        assert r.rc == 2, (argv, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and "state file" in lines[0], (argv, r.err)
    assert snapshot() == before


def test_down_of_an_unknown_run_says_so(aws: str) -> None:  # noqa: F811
    r = infra("down", "--run-id", "never-started-1")
    assert r.rc == 1, r.err
    last = r.err.strip().splitlines()[-1]
    assert "removed" not in last and "nothing of run never-started-1" in last, r.err
