"""An interrupted ``python -m infra up`` leaves nothing behind: SIGINT, SIGTERM and SIGHUP each
roll back everything the up created — including what was being created when the signal landed
(the bucket, the IAM role, the worker instances) — and the process exits 130, 129 and 143
(128 + the signal).

The real ``python -m infra`` process runs against the moto server, which lives in this pytest
process: a creating call is held inside moto until the signal has been delivered, so the signal
lands exactly while that call is in flight (no sleeps)."""

from __future__ import annotations

import base64
import inspect
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from moto.ec2.models.instances import InstanceBackend
from moto.iam.models import IAMBackend
from moto.s3.models import S3Backend

from infra.spec import new_run_id
from tests.infra_fixtures import (
    aws,  # noqa: F401  (fixture)
    leftovers,
    moto_url,  # noqa: F401  (fixture)
    snapshot,
)
from tests.procs import ROOT, env

pytestmark = pytest.mark.timeout(60)


def _signal_delivered(pid: int, deadline: float) -> None:
    """Wait until the kernel has handed every pending signal to the process (or it died of
    it: a zombie keeps its pending bits)."""
    while time.monotonic() < deadline:
        fields = dict(
            ln.split(":\t", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        if fields["State"].startswith("Z"):
            return
        if not int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16):
            return
        time.sleep(0.005)  # polling a condition, with a deadline
    raise AssertionError(f"signal still pending in {pid}")


def _text(user_data: object) -> str:
    """The user-data moto got (base64 on the wire), as text."""
    try:
        return base64.b64decode(str(user_data or ""), validate=True).decode()
    except ValueError:
        return str(user_data or "")


# One up per signal, each stopped while a different creating call is in flight (held in moto):
# (signal, moto backend, method, the argument naming the run, what is in flight, resources).
CASES = [
    (signal.SIGINT, S3Backend, "create_bucket", "bucket_name", "bucket", 1),
    (signal.SIGHUP, IAMBackend, "create_role", "role_name", "IAM role", 2),
    (signal.SIGTERM, InstanceBackend, "run_instances", "user_data", "2 worker instance(s)", 13),
]


def test_every_signal_during_up_rolls_back_everything(
    aws: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three ``up``s at once, one per signal; the SIGTERM one (stopped at its worker launch,
    13 resources in) also gets a SIGINT while its rollback is held: ignored, the rollback ends."""
    runs = {new_run_id(): case for case in CASES}
    in_flight = {rid: threading.Event() for rid in runs}
    release = {rid: threading.Event() for rid in runs}
    term_rid = next(rid for rid, case in runs.items() if case[0] == signal.SIGTERM)
    term_workers: set[str] = set()
    rolling_back, release_rollback = threading.Event(), threading.Event()

    def hold(backend: type, method: str, arg: str) -> None:
        real = getattr(backend, method)

        def held(self, *args, **kwargs):  # runs in the moto server's thread
            value = inspect.signature(real).bind(self, *args, **kwargs).arguments[arg]
            text = _text(value) if arg == "user_data" else str(value)
            mine = [
                rid
                for rid, case in runs.items()
                if case[2] == method
                and rid in text
                and (arg != "user_data" or "--role worker" in text)
            ]
            for rid in mine:
                in_flight[rid].set()
                release[rid].wait(30)
            result = real(self, *args, **kwargs)
            if term_rid in mine:
                term_workers.update(i.id for i in result.instances)
            return result

        monkeypatch.setattr(backend, method, held)

    for _, backend, method, arg, _, _ in CASES:
        hold(backend, method, arg)
    real_terminate = InstanceBackend.terminate_instances

    def hold_the_rollback(self, instance_ids):  # moto's thread
        if term_workers & set(instance_ids):
            rolling_back.set()
            release_rollback.wait(30)
        return real_terminate(self, instance_ids)

    monkeypatch.setattr(InstanceBackend, "terminate_instances", hold_the_rollback)
    before = snapshot()
    children = {
        rid: subprocess.Popen(
            [sys.executable, "-m", "infra", "up", "--run-id", rid, "--workers", "2"],
            cwd=ROOT,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rid in runs
    }
    results = {}
    try:
        for rid, (sig, *_) in runs.items():
            assert in_flight[rid].wait(40), f"up {rid} never reached its held call"
            children[rid].send_signal(sig)
            _signal_delivered(children[rid].pid, time.monotonic() + 10)
            release[rid].set()
        assert rolling_back.wait(40), "the SIGTERM up never started rolling back"
        children[term_rid].send_signal(signal.SIGINT)
        _signal_delivered(children[term_rid].pid, time.monotonic() + 10)
        release_rollback.set()
        for rid, child in children.items():
            results[rid] = child.communicate(timeout=40)
    finally:
        release_rollback.set()
        for rid, child in children.items():
            release[rid].set()
            if child.poll() is None:
                child.kill()
                child.wait()
    for rid, (sig, _, _, _, what, resources) in runs.items():
        out, err = results[rid]
        assert children[rid].returncode == 128 + sig, (sig.name, err)
        last = err.strip().splitlines()[-1]
        assert f"interrupted by {sig.name}" in last, err
        assert f"rolled back {resources} of {resources} resource(s)" in last, err
        assert f"rolled back {what}" in err  # the one that was in flight
        ignored = "1 further signal(s) ignored while rolling back"
        assert (ignored in last) == (sig == signal.SIGTERM), err
        assert out == ""  # no run id printed: the run is not up
        assert leftovers(rid) == {}, sig.name
    assert snapshot() == before
