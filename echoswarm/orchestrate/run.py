"""``python -m echoswarm run``: echo servers + a Locust master + N workers on this machine.

The same distributed engine as on EC2 (Locust master/worker over ZeroMQ, on loopback), the same
command lines (:mod:`echoswarm.orchestrate.commands`). Flow:

1. read the locustfile's ``ECHOSWARM_SERVERS`` (:mod:`echoswarm.orchestrate.scenario`), start
   each server on a free port, wait for its ``LISTENING`` line and for it to accept connections;
2. start the master (headless, or with the web UI) and the workers, passing the servers'
   addresses as the scenario's custom arguments;
3. watch: a progress line from the master's ``live.json``; a dead server fails the run at once
   (exit 3); a worker that dies mid-run is replaced and the master rebalances the users onto
   the replacement (:mod:`echoswarm.orchestrate.workers`; the run ends "degraded", exit 4);
   Ctrl-C/SIGTERM stop the run gracefully (results finalized, ``interrupted``; exit 130/143);
   a second Ctrl-C kills; if this process is killed, its children get SIGTERM (pdeath) and the
   master finalizes the run as ``interrupted`` (cut short of its planned duration);
4. afterwards: every child stopped (master first, so it collects the workers' last reports),
   the report written, the summary and SLO verdicts printed.

Exit codes: 0 ok · 1 an SLO violated · 2 usage error · 3 run error · 4 completed but degraded
(a worker was lost and replaced; results partial) · 130/143 interrupted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from echoswarm import hdr
from echoswarm import results as results_mod
from echoswarm.measure import epoch_ns
from echoswarm.orchestrate import commands, progress, slo, wanpath
from echoswarm.orchestrate.scenario import ServerSpec, read_servers
from echoswarm.orchestrate.supervise import Child, ChildError, Supervisor, free_port, wait_tcp
from echoswarm.orchestrate.workers import WorkerPool
from echoswarm.wan import WanSpec

EXIT_OK, EXIT_SLO, EXIT_USAGE, EXIT_RUN, EXIT_DEGRADED = 0, 1, 2, 3, 4
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class RunConfig:
    locustfile: Path
    workers: int = 2
    users: int = 10
    spawn_rate: float = 10.0
    run_time: str | None = "30s"
    run_seconds: float | None = 30.0
    results: Path | None = None
    slos: list[slo.SLO] = field(default_factory=list)
    web: bool = False
    web_port: int = commands.DEFAULT_WEB_PORT
    locust_args: list[str] = field(default_factory=list)
    report: bool = True
    argv: list[str] = field(default_factory=list)
    # Extra args per declared server (by label), appended after the declared ones so they win:
    # e.g. {"tcp": ["--model", "epoll"]} for one cell of a sweep.
    server_overrides: dict[str, list[str]] = field(default_factory=dict)
    master_timeout_s: float | None = None  # workers quit this long after the master goes silent
    wan: WanSpec | None = None  # the servers are reached through the WAN relay (--wan)
    max_worker_restarts: int | None = None  # None: two per worker
    # The instrument's overhead measured by `python -m bench overhead` (orchestrate/instrument),
    # written into run.json as `instrument_overhead` for the report.
    instrument_overhead: dict[str, dict[str, Any]] | None = None


class RunError(RuntimeError):
    """The run could not complete (exit 3); the message is one line."""


class _Interrupted(Exception):
    pass


class LocalRun:
    """One local run; :meth:`execute` returns the process exit code."""

    def __init__(self, cfg: RunConfig, out: Any = sys.stdout) -> None:
        self.cfg = cfg
        self.out = out
        self.results = cfg.results or results_mod.default_run_dir(
            str(cfg.locustfile), epoch_ns() / 1e9
        )
        self.sup = Supervisor(self.results / "logs")
        self.pool: WorkerPool | None = None
        self.wan: wanpath.WanPath | None = None
        self.stopping = False  # no worker is replaced once the run is being stopped
        self.failure = ""  # why the run failed (one line), for run.json
        self.signal_received: int | None = None
        self.events: list[dict[str, Any]] = []  # children that died, for run.json
        self.t0 = time.monotonic()

    # -- signals ---------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal_received is not None:  # second Ctrl-C: no more grace
            for c in self.sup.children:
                c.kill_group()
            raise SystemExit(EXIT_SIGNAL.get(signal.Signals(signum), 130))
        self.signal_received = signum
        raise _Interrupted()

    def execute(self) -> int:
        servers = read_servers(self.cfg.locustfile)  # ScenarioError → usage error in __main__
        try:
            self.results.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._say(f"error: cannot create {self.results}: {exc.strerror or exc}", err=True)
            return EXIT_USAGE
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        master: Child | None = None
        code = EXIT_OK
        try:
            try:
                targets = self._start_servers(servers)
                master = self._start_locust(targets)
                code = self._watch(master)
            except _Interrupted:
                code = EXIT_SIGNAL.get(signal.Signals(self.signal_received or 2), 130)
                self._say(f"\n{signal.Signals(self.signal_received or 2).name}: stopping the run…")
            except (ChildError, RunError) as exc:
                self._say(f"error: {exc}", err=True)
                self.failure = str(exc)
                code = EXIT_RUN
            finally:
                # Ignore further signals while stopping: cleanup must finish.
                for s in old:
                    signal.signal(s, signal.SIG_IGN)
                self._stop_children(master)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return self._finish(code)

    # -- start -----------------------------------------------------------------------------
    def _start_servers(self, specs: list[ServerSpec]) -> list[str]:
        """Start every declared server (and the WAN relay in front of them with ``--wan``);
        returns the Locust args passing the addresses the users are to reach."""
        started: list[tuple[str, int, Child]] = []
        for spec in specs:
            child = self.sup.start(
                f"server-{spec.label}",
                "server",
                commands.server_argv(
                    spec.kind,
                    port=0,
                    args=[*spec.args, *self.cfg.server_overrides.get(spec.label, [])],
                ),
            )
            host, port = self.sup.wait_listening(child)
            wait_tcp(host, port)
            started.append((host, port, child))
        addresses = [(host, port) for host, port, _child in started]
        if self.cfg.wan is not None and specs:
            self.wan, addresses = wanpath.start(
                self.sup,
                self.cfg.wan,
                [
                    (spec.label, host, port)
                    for spec, (host, port, _c) in zip(specs, started, strict=True)
                ],
                self.results,
            )
            self._say(
                f"wan      {self.cfg.wan.contract()}  (relay pid {self.wan.child.pid}, "
                f"one link for {len(specs)} server(s))"
            )
        args: list[str] = []
        for spec, (host, port), (_h, _p, child) in zip(specs, addresses, started, strict=True):
            if spec.kind == "grpc":
                _grpc_health(host, port)  # through the relay too: the path works end to end
            value = commands.target_value(spec.kind, host, port)
            via = " via the WAN relay" if self.wan is not None else ""
            self._say(f"server {spec.label:<8} {value}  (pid {child.pid}){via}")
            args += [spec.option, value]
        return args

    def _start_locust(self, targets: list[str]) -> Child:
        cfg = self.cfg
        master_port = free_port()
        # --enable-rebalancing: a lost worker's users move to the others at once, and are
        # spread again when its replacement (echoswarm.orchestrate.workers) connects.
        extra = [
            *targets,
            "--expect-workers-max-wait",
            "60",
            "--exit-code-on-error",
            "0",
            "--enable-rebalancing",
        ]
        timeout = (
            ["--master-timeout-s", f"{cfg.master_timeout_s:g}"] if cfg.master_timeout_s else []
        )
        web_port = cfg.web_port if cfg.web else commands.DEFAULT_WEB_PORT
        master = self.sup.start(
            "master",
            "master",
            commands.master_argv(
                str(cfg.locustfile),
                expect_workers=cfg.workers,
                users=cfg.users,
                spawn_rate=cfg.spawn_rate,
                run_time=cfg.run_time,
                results_dir=str(self.results),
                bind_port=master_port,
                web=cfg.web,
                web_port=web_port,
                extra=[*extra, *timeout, *cfg.locust_args],
            ),
        )
        self.pool = WorkerPool(
            self.sup,
            commands.worker_argv(
                str(cfg.locustfile),
                master_port=master_port,
                # exit 0 when told to quit even after user errors: non-zero then means a crash
                extra=[*targets, *timeout, "--exit-code-on-error", "0"],
            ),
            cfg.workers,
            max_restarts=cfg.max_worker_restarts,
            say=lambda text: self._say(text, err=True),
        )
        self.pool.start()
        self._say(
            f"locust   master pid {master.pid}, {cfg.workers} worker(s); "
            f"{cfg.users} users at {cfg.spawn_rate:g}/s for {cfg.run_time or 'until stopped'}"
        )
        if cfg.web:
            self._say(f"web UI   http://127.0.0.1:{web_port}/  (echoswarm tab: HDR percentiles)")
        self._say(f"results  {self.results}")
        return master

    # -- watch -----------------------------------------------------------------------------
    def _watch(self, master: Child) -> int:
        cfg = self.cfg
        budget = (cfg.run_seconds or 0) + 120 if cfg.run_seconds else None
        line = progress.ProgressLine(self.out, total_s=cfg.run_seconds)
        live = self.results / "live.json"
        workers_gone = 0.0
        while True:
            for child in self.sup.exited():
                self._child_exited(child, master)
            rc = master.poll()
            if rc is not None:
                line.done()
                if rc == 2 and not live.exists():
                    # Locust's own usage error (e.g. a bad extra argument after --).
                    self.failure = f"locust: {master.last_lines(1)}"
                    self._say(f"error: {self.failure}", err=True)
                    return EXIT_USAGE
                if rc != 0:  # failures do not count: the master runs with --exit-code-on-error 0
                    raise RunError(f"locust master exited with code {rc}: {master.last_lines()}")
                return EXIT_OK
            if not any(c.alive() for c in self.sup.children if c.role == "worker"):
                # Workers also exit when the master tells them to quit at the end of a run:
                # give the master time to finish before calling it a failure.
                workers_gone = workers_gone or time.monotonic()
                if time.monotonic() - workers_gone > 20:
                    raise RunError(f"every worker has exited; see the logs in {self.sup.log_dir}")
            if budget is not None and time.monotonic() - self.t0 > budget:
                raise RunError(f"the run did not end within {budget:g}s of its start")
            line.update(progress.read_live(live), time.monotonic() - self.t0)
            time.sleep(0.25)  # the supervision tick: children and live.json are polled

    def _child_exited(self, child: Child, master: Child | None = None) -> None:
        rc = child.poll()
        at = time.monotonic() - self.t0
        self.events.append(
            {
                "child": child.name,
                "role": child.role,
                "pid": child.pid,
                "exit_code": rc,
                "at_s": round(at, 2),
                "last_output": child.last_lines(),
            }
        )
        if child.role == "server":
            raise RunError(
                f"server {child.name} (pid {child.pid}) exited with code {rc} after {at:.1f}s: "
                f"{child.last_lines()}"
            )
        if child.role == "worker" and self.pool is not None:
            running = master is not None and master.alive() and not self.stopping
            self.pool.on_exit(child, at, replace=running)

    # -- stop and finish -------------------------------------------------------------------
    def _stop_children(self, master: Child | None) -> None:
        self.stopping = True
        if master is not None and master.alive():
            # SIGINT is Locust's Ctrl-C path: it stops the test, writes its HTML report,
            # fires quitting (our results plugin finalizes) and tells workers to quit.
            self.sup.stop([master], signal.SIGINT, timeout=30)
        workers = [c for c in self.sup.children if c.role == "worker"]
        # Workers quit by themselves when the master tells them; give them a moment.
        deadline = time.monotonic() + 10
        for w in workers:
            try:
                w.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        self.sup.stop_all(timeout=10)

    def _finish(self, code: int) -> int:
        data = self._read_run_json()
        verdicts: list[slo.Verdict] = []
        if code == EXIT_OK and self.cfg.slos:
            verdicts = judge(self.results, self.cfg.slos)
            if not all(v.passed for v in verdicts):
                code = EXIT_SLO
        degraded = self._degraded(data)
        if code == EXIT_OK and degraded:
            code = EXIT_DEGRADED
        self._annotate_run_json(data, code)
        if code in (EXIT_OK, EXIT_SLO, EXIT_DEGRADED, *EXIT_SIGNAL.values()) and self.cfg.report:
            self._report()
        if verdicts:
            self._say("\nSLOs")
            for v in verdicts:
                self._say("  " + v.describe())
        if degraded and code in (EXIT_DEGRADED, EXIT_SLO):
            self._say(f"degraded: {degraded} (run.json: gaps, orchestrator.workers)")
        self._say(f"results: {self.results}")
        return code

    def _degraded(self, data: dict[str, Any]) -> str:
        """Why the run's load was not the one asked for ("" when it was)."""
        records = self.pool.lost if self.pool else []
        lost = [r["child"] for r in records]
        if lost:
            replaced = [r["replaced_by"] for r in records if r["replaced_by"]]
            return f"worker(s) {', '.join(lost)} lost" + (
                f", replaced by {', '.join(replaced)}" if replaced else ", not replaced"
            )
        if data.get("lost_workers"):
            names = ", ".join(map(str, data["lost_workers"]))
            return f"the master lost worker(s) {names}"
        if data.get("gaps"):
            return "a worker's heartbeats stopped for a while (it came back)"
        return ""

    def _read_run_json(self) -> dict[str, Any]:
        try:
            data = json.loads((self.results / "run.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _annotate_run_json(self, data: dict[str, Any], code: int) -> None:
        path = self.results / "run.json"
        orchestrator: dict[str, Any] = {
            "argv": self.cfg.argv,
            "exit_code": code,
            "children_exited": self.events,
            "lost_workers": [r["child"] for r in (self.pool.lost if self.pool else [])],
            "workers": self.pool.as_json() if self.pool else None,
        }
        if self.signal_received is not None and data.get("status") not in (None, "running"):
            # Stopped by the user before its end: the master finalized what there was.
            orchestrator["interrupted_by"] = signal.Signals(self.signal_received).name
            data["status"] = "interrupted"
        elif self.signal_received is not None:  # stopped before the master wrote results
            name = signal.Signals(self.signal_received).name
            orchestrator["interrupted_by"] = name
            data["status"] = "interrupted"
            data.setdefault("failure_reason", f"{name} before the master finalized its results")
        elif code in (EXIT_RUN, EXIT_USAGE) or data.get("status") in (None, "running"):
            # The master never wrote a final status (it failed, or never started): say so.
            data["status"] = "failed"
            data.setdefault("failure_reason", self.failure or _no_final_status(data))
        data["orchestrator"] = orchestrator
        if self.wan is not None:
            data["wan"] = self.wan.as_json()
        if self.cfg.instrument_overhead:
            data["instrument_overhead"] = self.cfg.instrument_overhead
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        tmp.replace(path)

    def _report(self) -> None:
        if not (self.results / "summary.csv").exists():
            self._say("no summary.csv was written; skipping the report", err=True)
            return
        proc = subprocess.run(
            [sys.executable, "-m", "analysis", "report", str(self.results)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.stdout:
            self.out.write(proc.stdout)
        if proc.returncode != 0:
            self._say(f"report failed: {proc.stderr.strip().splitlines()[-1:]}", err=True)

    def _say(self, text: str, err: bool = False) -> None:
        stream = sys.stderr if err else self.out
        stream.write(text + "\n")
        stream.flush()


def _no_final_status(data: dict[str, Any]) -> str:
    if not data:
        return "the Locust master wrote no run.json (see logs/master.log)"
    return "the Locust master ended without finalizing its results (see logs/master.log)"


def judge(results: Path, slos: list[slo.SLO]) -> list[slo.Verdict]:
    """Evaluate SLOs on a results directory (summary.csv + merged HDR histograms)."""
    rows = {(r["request_type"], r["name"]): r for r in results_mod.read_summary(results)}
    hists = results_mod.load_histograms(results)

    def percentile_ms(request_type: str, name: str, p: float) -> float | None:
        h = hists.get((request_type, name))
        if h is None or h.get_total_count() == 0:
            return None
        return hdr.value_at_percentile_ms(h, p)  # nearest rank

    return slo.evaluate(slos, rows, percentile_ms)


def _grpc_health(host: str, port: int, timeout: float = 10.0) -> None:
    """The gRPC server must answer the standard health check with SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            raise ChildError(f"gRPC server {host}:{port} failed its health check: {exc}") from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise ChildError(f"gRPC server {host}:{port} is not SERVING ({reply.status})")
