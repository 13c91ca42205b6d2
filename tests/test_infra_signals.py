"""An interrupted ``python -m infra up`` leaves nothing behind: SIGINT, SIGTERM and SIGHUP each
roll back everything the up created — including the instances whose launch was in flight when
the signal landed — and the process exits 130, 143 and 129 (128 + the signal).

The real ``python -m infra`` process runs against the moto server, which lives in this pytest
process: the worker launch is held inside moto until the signal has been delivered, so the
signal lands exactly while an AWS call that creates something is in flight (no sleeps)."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

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


def _held_launch(user_data: object) -> str:
    """The user-data moto got (base64 on the wire), as text."""
    text = str(user_data or "")
    try:
        return base64.b64decode(text, validate=True).decode()
    except ValueError:
        return text


def test_every_signal_during_up_rolls_back_everything(
    aws: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three ``up``s at once (one per signal), each stopped while its worker launch is held."""
    from moto.ec2.models.instances import InstanceBackend

    real = InstanceBackend.run_instances
    cases = {new_run_id(): sig for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    in_flight = {rid: threading.Event() for rid in cases}
    release = {rid: threading.Event() for rid in cases}

    def hold_the_workers(self, image_id, count, user_data, *args, **kwargs):  # moto's thread
        text = _held_launch(user_data)
        for rid in cases:
            if rid in text and "--role worker" in text:
                in_flight[rid].set()
                release[rid].wait(30)
        return real(self, image_id, count, user_data, *args, **kwargs)

    monkeypatch.setattr(InstanceBackend, "run_instances", hold_the_workers)
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
        for rid in cases
    }
    results = {}
    try:
        for rid, sig in cases.items():
            assert in_flight[rid].wait(40), f"up {rid} never reached the worker launch"
            children[rid].send_signal(sig)
            _signal_delivered(children[rid].pid, time.monotonic() + 10)
            release[rid].set()
        for rid, child in children.items():
            results[rid] = child.communicate(timeout=40)
    finally:
        for rid, child in children.items():
            release[rid].set()
            if child.poll() is None:
                child.kill()
                child.wait()
    for rid, sig in cases.items():
        out, err = results[rid]
        assert children[rid].returncode == 128 + sig, (sig.name, err)
        last = err.strip().splitlines()[-1]
        assert f"interrupted by {sig.name}" in last, err
        assert "rolled back 13 of 13 resource(s)" in last, err
        assert "rolled back 2 worker instance(s)" in err  # the launch that was in flight
        assert out == ""  # no run id printed: the run is not up
        assert leftovers(rid) == {}, sig.name
    assert snapshot() == before
