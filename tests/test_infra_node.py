"""The node bootstrap, run locally: the same ``python -m infra.node`` commands the EC2 units run
start a TCP echo server, a Locust master and a Locust worker (which takes the locustfile from
the master, as on EC2) on loopback; a short S000 run succeeds, the master uploads the results
directory to the run's bucket (moto's S3) and ``python -m infra fetch`` brings it home."""

from __future__ import annotations

import csv
import json
import socket
import sys
from pathlib import Path

import pytest

from infra.spec import bucket_name, new_run_id
from tests import procs
from tests.infra_fixtures import (
    aws,  # noqa: F401  (fixture)
    client,
    infra,
    moto_url,  # noqa: F401  (fixture)
)

ACCOUNT = "123456789012"  # moto's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(90)
def test_node_roles_run_a_short_test_and_upload_results(aws: str, tmp_path: Path) -> None:  # noqa: F811
    run_id = new_run_id()
    bucket = bucket_name(ACCOUNT, run_id)
    s3 = client("s3")
    s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"}
    )
    node = [sys.executable, "-m", "infra.node"]
    server = procs.start(
        [*node, "--role", "server", "--kind", "tcp", "--host", "127.0.0.1", "--port", "0"],
        tmp_path=tmp_path / "server",
    )
    master = worker = None
    try:
        master_port = free_port()
        config = {
            "run_id": run_id,
            "locustfile": "locustfiles/audio_stream.py",
            "users": 2,
            "spawn_rate": 2,
            "run_time": "3s",
            "expect_workers": 1,
            "bind_host": "127.0.0.1",
            "bind_port": master_port,
            "servers": [
                {"kind": "tcp", "option": "--tcp-target", "host": "127.0.0.1", "port": server.port}
            ],
            "extra": ["--transports", "tcp"],
            "results_dir": str(tmp_path / "node-results"),
            "bucket": bucket,
            "prefix": f"results/{run_id}/",
            "region": "ap-northeast-1",
        }
        (tmp_path / "run.json").write_text(json.dumps(config))
        master = procs.start(
            [*node, "--role", "master", "--config", str(tmp_path / "run.json")],
            tmp_path=tmp_path / "master",
            wait_listening=False,
        )
        worker = procs.start(
            [*node, "--role", "worker", "--master-host", "127.0.0.1"]
            + ["--master-port", str(master_port)],
            tmp_path=tmp_path / "worker",
            wait_listening=False,
        )
        assert master.popen.wait(timeout=60) == 0, master.stderr_text()[-3000:]
        assert worker.popen.wait(timeout=30) == 0, worker.stderr_text()[-3000:]  # told to quit
    finally:
        for p in (worker, master, server):
            if p is not None:
                p.stop()

    keys = {
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"results/{run_id}/")["Contents"]
    }
    for name in ("run.json", "summary.csv", "live.json", "events.parquet"):
        assert f"results/{run_id}/{name}" in keys, keys
    dest = tmp_path / "fetched"
    r = infra("fetch", "--run-id", run_id, "--dest", str(dest))
    assert r.rc == 0, r.err
    assert f"python -m analysis report {dest}" in r.out
    run = json.loads((dest / "run.json").read_text())
    assert run["status"] == "complete"
    rows = {
        (row["request_type"], row["name"]): row
        for row in csv.DictReader((dest / "summary.csv").open())
    }
    assert int(rows[("tcp", "msg")]["count"]) > 0
    assert int(rows[("tcp", "msg")]["failures"]) == 0
