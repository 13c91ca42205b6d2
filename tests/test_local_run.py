"""End to end: `python -m echoswarm run` with real servers, a real Locust master and workers.

Each test runs the orchestrator as a subprocess and checks its exit code, the results directory
and that no child process or listening port outlives it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.procs import PYTHON, ROOT, env, listening_ports_of

AUDIO = "locustfiles/audio_stream.py"
pytestmark = pytest.mark.slow


def _argv(results: Path, *args: str) -> list[str]:
    return [PYTHON, "-m", "echoswarm", "run", "--results", str(results), *args]


class Orchestrator:
    """A running `python -m echoswarm run` and everything it started."""

    def __init__(self, argv: list[str], tmp_path: Path) -> None:
        self.out = (tmp_path / "orchestrator.out").open("w+")
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, env=env(), stdout=self.out, stderr=subprocess.STDOUT, text=True
        )
        self.proc = psutil.Process(self.popen.pid)
        self.seen: set[int] = set()

    def children(self) -> list[psutil.Process]:
        try:
            kids = self.proc.children(recursive=True)
        except psutil.Error:
            return []
        self.seen.update(k.pid for k in kids)
        return kids

    def child_matching(self, needle: str, timeout: float = 60) -> psutil.Process:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for k in self.children():
                try:
                    if needle in " ".join(k.cmdline()):
                        return k
                except psutil.Error:
                    continue
            time.sleep(0.1)  # polling the process table with a deadline
        raise AssertionError(f"no child process matching {needle!r}; output:\n{self.output()}")

    def wait_for_file(self, path: Path, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert self.popen.poll() is None, f"orchestrator exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"{path} never appeared:\n{self.output()}"
            self.children()
            time.sleep(0.1)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise AssertionError(
                f"orchestrator still running after {timeout}s:\n{self.output()}"
            ) from None

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def assert_no_leftovers(self) -> None:
        alive = [p for p in self.seen if psutil.pid_exists(p) and _not_zombie(p)]
        assert not alive, f"children still running: {alive}"
        assert not listening_ports_of(self.seen), "a child still holds a listening port"


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


Orchestrate = Callable[[list[str]], Orchestrator]


@pytest.fixture
def orchestrate(tmp_path: Path) -> Iterator[Orchestrate]:
    started: list[Orchestrator] = []

    def _start(argv: list[str]) -> Orchestrator:
        o = Orchestrator(argv, tmp_path)
        started.append(o)
        return o

    yield _start
    for o in started:
        if o.popen.poll() is None:
            o.popen.kill()
            o.popen.wait()
        for pid in o.seen:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass


def _summary(results: Path) -> dict[tuple[str, str], dict[str, str]]:
    import csv

    with (results / "summary.csv").open() as f:
        return {(r["request_type"], r["name"]): r for r in csv.DictReader(f)}


@pytest.mark.timeout(120)
def test_audio_stream_end_to_end(tmp_path: Path, orchestrate: Orchestrate) -> None:
    results = tmp_path / "run"
    o = orchestrate(
        _argv(
            results,
            AUDIO,
            *"--workers 2 -u 20 -r 20 -t 10s --slo *:*msg:p99<2s --slo *:*:error_rate<1%".split(),
        )
    )
    o.wait_for_file(results / "live.json")
    o.children()
    rc = o.wait(90)
    out = o.output()
    assert rc == 0, out
    rows = _summary(results)
    for key in (("grpc", "bidi msg"), ("ws", "msg"), ("tcp", "msg")):
        assert key in rows, f"missing row {key}: {sorted(rows)}"
        assert int(rows[key]["count"]) > 100, rows[key]
        assert int(rows[key]["failures"]) == 0, rows[key]
    for name in ("run.json", "events.parquet", "report.html", "locust_stats.csv"):
        assert (results / name).exists(), name
    run = json.loads((results / "run.json").read_text())
    assert run["status"] == "complete"
    assert "PASS" in out and "FAIL" not in out
    o.assert_no_leftovers()

    from analysis import s000 as demo

    table = demo.comparison(results)
    assert list(table["transport"]) == ["grpc", "ws", "tcp"]
    assert (table["failures"] == 0).all() and (table["messages"] > 100).all()
    assert (table["p50_ms"] <= table["p99_ms"]).all() and (table["lag_p99_ms"] >= 0).all()
    assert "steadiest by p99" in demo.render(results)


@pytest.mark.timeout(120)
def test_violated_slo_exits_1(tmp_path: Path, orchestrate: Orchestrate) -> None:
    results = tmp_path / "run"
    o = orchestrate(
        _argv(
            results,
            AUDIO,
            *"--workers 1 -u 3 -t 4s --no-report --slo *:*msg:p50<1us -- --transports tcp".split(),
        )
    )
    rc = o.wait(90)
    assert rc == 1, o.output()
    assert "FAIL" in o.output()
    o.assert_no_leftovers()


@pytest.mark.timeout(120)
def test_lost_worker_is_recorded_and_run_completes(
    tmp_path: Path, orchestrate: Orchestrate
) -> None:
    results = tmp_path / "run"
    o = orchestrate(
        _argv(
            results, AUDIO, *"--workers 2 -u 6 -r 6 -t 12s --no-report -- --transports tcp".split()
        )
    )
    o.wait_for_file(results / "live.json")
    victim = _a_worker(o)
    victim.kill()
    rc = o.wait(90)
    assert rc == 0, o.output()
    run = json.loads((results / "run.json").read_text())
    assert len(run["orchestrator"]["lost_workers"]) == 1
    assert int(_summary(results)[("tcp", "msg")]["count"]) > 0
    assert "exited with code -9" in o.output()
    o.assert_no_leftovers()


def _a_worker(o: Orchestrator) -> psutil.Process:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for k in o.children():
            try:
                cmd = k.cmdline()
            except psutil.Error:
                continue
            if "--worker" in cmd and "echoswarm.pdeath" not in cmd:
                return k
        time.sleep(0.1)
    raise AssertionError("no worker process found")


@pytest.mark.timeout(120)
def test_sigint_gives_partial_results_and_no_orphans(
    tmp_path: Path, orchestrate: Orchestrate
) -> None:
    results = tmp_path / "run"
    o = orchestrate(
        _argv(results, AUDIO, "--workers", "1", "-u", "4", "-t", "60s", "--", "--transports", "tcp")
    )
    o.wait_for_file(results / "live.json")
    o.children()
    o.popen.send_signal(signal.SIGINT)
    rc = o.wait(60)
    assert rc == 130, o.output()
    run = json.loads((results / "run.json").read_text())
    assert run["status"] == "partial"
    assert run["orchestrator"]["interrupted_by"] == "SIGINT"
    assert (results / "summary.csv").exists()
    o.assert_no_leftovers()


@pytest.mark.timeout(120)
def test_dead_server_fails_the_run_fast(tmp_path: Path, orchestrate: Orchestrate) -> None:
    results = tmp_path / "run"
    o = orchestrate(
        _argv(results, AUDIO, *"--workers 1 -u 3 -t 60s --no-report -- --transports tcp".split())
    )
    o.wait_for_file(results / "live.json")
    server = o.child_matching("servers tcp")
    killed_at = time.monotonic()
    server.kill()
    rc = o.wait(60)
    assert rc == 3, o.output()
    assert time.monotonic() - killed_at < 45
    assert "server tcp" in o.output() and "exited with code" in o.output()
    o.assert_no_leftovers()


@pytest.mark.timeout(60)
def test_server_that_cannot_start_fails_with_its_error(tmp_path: Path) -> None:
    lf = tmp_path / "broken.py"
    lf.write_text(
        "import locust\n"
        'ECHOSWARM_SERVERS = [{"kind": "tcp", "option": "--tcp-target",'
        ' "args": ["--model", "no-such-model"]}]\n'
    )
    proc = subprocess.run(
        _argv(tmp_path / "run", str(lf)),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 3
    assert "exited with code 2 before listening" in proc.stderr
