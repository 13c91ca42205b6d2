"""The results plugin for Locust: HDR histograms and per-event records, merged on the master.

Importing this module (``echoswarm.users.sink`` does) registers listeners on Locust's global
events. In each Locust process the ``init`` event creates one :class:`Collector`, whose role
follows the runner:

* **worker** — records every ``request`` event into a :class:`~echoswarm.results_record.Recorder`
  and ships one report per Locust stats report (``report_to_master``, every 3 s, plus the final
  one Locust sends on quit, and one more we send on a worker's own shutdown).
* **master** — merges ``worker_report`` data into an ``Aggregate`` (results_merge) and every
  report interval writes the results directory (``ResultsWriter``, results.py).
  Its ``quit`` is wrapped so that, after telling the workers to quit, it waits (bounded) for
  every live worker's final report *before* Locust tears the message loop down — stock Locust
  waits a fixed 0.5 s and can lose the tail of a run. Finalization happens at Locust's ``quit``
  event, after all of that.
* **local** (plain or headless single process) — both at once, without the wire.

The workers never touch the results directory. Nothing here prints; problems go to the
``echoswarm.collect`` logger.
"""

from __future__ import annotations

import logging
import sys
import weakref
from pathlib import Path
from typing import Any

import gevent
import gevent.lock
from locust import events
from locust.env import Environment
from locust.runners import (
    STATE_MISSING,
    STATE_STOPPED,
    WORKER_REPORT_INTERVAL,
    MasterRunner,
    WorkerRunner,
)

from echoswarm import hdr
from echoswarm import results_options as opt_types
from echoswarm.measure import Sample, epoch_ns, now_ns
from echoswarm.results import ResultsWriter, default_run_dir, environment_info, json_safe
from echoswarm.results_events import warm_up
from echoswarm.results_merge import Aggregate
from echoswarm.results_record import Recorder, foreign_sample

log = logging.getLogger(__name__)
REPORT_KEY = "echoswarm"
DEFAULT_MAX_EVENTS_PER_S = 20_000
_collectors: weakref.WeakKeyDictionary[Environment, Collector] = weakref.WeakKeyDictionary()


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    parser.add_argument(
        "--results-dir",
        default=None,
        include_in_web_ui=False,
        help="echoswarm results directory (default results/<UTC stamp>-<locustfile stem>); "
        "written by the master or the local runner only",
    )
    parser.add_argument(
        "--events-sample-rate",
        type=opt_types.rate,
        default=1.0,
        help="fraction of samples kept as rows of events.parquet (1.0 = every sample)",
    )
    parser.add_argument(
        "--events-max-per-s",
        type=opt_types.positive_int,
        default=DEFAULT_MAX_EVENTS_PER_S,
        help="per worker process: above this many events/s the kept fraction is halved (recorded)",
    )
    parser.add_argument(
        "--results-drain-s",
        type=opt_types.seconds,
        default=10.0,
        include_in_web_ui=False,
        help="how long the master waits at quit for the workers' final reports",
    )


@events.init.add_listener
def _on_init(environment: Environment, **_kw: Any) -> None:
    if environment.runner is not None:
        Collector(environment)


def snapshot(environment: Environment) -> dict[str, Any]:
    """Live progress (JSON-able) on the master or a local runner; ``{}`` elsewhere."""
    c = _collectors.get(environment)
    return c.snapshot() if c is not None and c.agg is not None else {}


def finalize(environment: Environment) -> None:
    """Write the final results now (Locust's ``quit`` event does this for command-line runs)."""
    c = _collectors.get(environment)
    if c is not None:
        c.finalize()


def run_dir(environment: Environment) -> Path | None:
    """The results directory of this (master/local) process, once the test has started."""
    c = _collectors.get(environment)
    return c.writer.dir if c is not None and c.writer is not None else None


def _opt(environment: Environment, name: str, default: Any) -> Any:
    value = getattr(environment.parsed_options, name, None)
    return default if value is None else value


class Collector:
    def __init__(self, environment: Environment) -> None:
        self.env = environment
        runner = environment.runner
        assert runner is not None
        self.runner: Any = runner  # Local/Master/WorkerRunner; private members are used below
        self.role = (
            "worker"
            if isinstance(runner, WorkerRunner)
            else "master"
            if isinstance(runner, MasterRunner)
            else "local"
        )
        self.recorder: Recorder | None = None
        self.agg: Aggregate | None = None
        self.writer: ResultsWriter | None = None
        self.start_s: float | None = None
        self.stop_s: float | None = None
        self._ticker: gevent.Greenlet | None = None
        self._busy = gevent.lock.Semaphore()
        self._connected: dict[str, float] = {}
        self._missing_seen: set[str] = set()
        self._drained = False
        self._drain_timed_out: list[str] = []
        self._recent: dict[hdr.Row, float] = {}
        self._prev: tuple[float, dict[hdr.Row, int]] | None = None
        ev = environment.events
        hdr.percentiles_ms(hdr.new_histogram())  # builds the cached bucket tables now
        if self.role in ("worker", "local"):
            self.recorder = self._new_recorder()
            warm_up()
            ev.request.add_listener(self.on_request)
        if self.role in ("master", "local"):
            self.agg = Aggregate()
            ev.test_start.add_listener(self.on_test_start)
            ev.test_stop.add_listener(self.on_test_stop)
            ev.quit.add_listener(self.on_quit)
        if self.role == "worker":
            ev.test_start.add_listener(self.on_worker_test_start)
            ev.report_to_master.add_listener(self.on_report_to_master)
            ev.quitting.add_listener(self.on_worker_quitting)
        if self.role == "master":
            ev.worker_report.add_listener(self.on_worker_report)
            ev.worker_connect.add_listener(self.on_worker_connect)
            self._wrap_master_quit()
        _collectors[environment] = self

    # -- recording (worker / local) --------------------------------------------------------
    def _new_recorder(self) -> Recorder:
        per_s = int(_opt(self.env, "events_max_per_s", DEFAULT_MAX_EVENTS_PER_S))
        return Recorder(
            float(_opt(self.env, "events_sample_rate", 1.0)),
            max_events_per_report=int(per_s * WORKER_REPORT_INTERVAL),
        )

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float | None = None,
        response_length: int | None = None,
        exception: BaseException | None = None,
        start_time: float | None = None,
        sample: Sample | None = None,
        **_kw: Any,
    ) -> None:
        assert self.recorder is not None
        if sample is None:
            sample = foreign_sample(
                request_type, name, response_time, response_length, exception, start_time
            )
        self.recorder.record(sample)

    def on_worker_test_start(self, **_kw: Any) -> None:
        # The master's options (sample rate, cap) reach the worker just before test_start.
        assert self.recorder is not None
        if self.recorder.pending() == 0:
            self.recorder = self._new_recorder()

    def on_report_to_master(self, client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        assert self.recorder is not None
        # After the runner has stopped, every user is gone: this report holds all there was.
        data[REPORT_KEY] = self.recorder.harvest(
            final=self.runner.state == STATE_STOPPED, pause=_yield
        )

    def on_worker_quitting(self, **_kw: Any) -> None:
        # A worker that quits on its own (Ctrl-C, SIGTERM) gets no final report from stock
        # Locust; stop the users and send one, before the worker's "quit" message goes out.
        runner = self.runner
        try:
            if runner.state != STATE_STOPPED:
                runner.stop()
            runner._send_stats()  # private, but it is exactly "fire report_to_master + send"
        except Exception:
            log.exception("could not send the final results report")

    # -- merging and writing (master / local) -----------------------------------------------
    def on_worker_connect(self, client_id: str, **_kw: Any) -> None:
        self._connected.setdefault(client_id, self._now_s())

    def on_worker_report(self, client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        report = data.get(REPORT_KEY)
        if report is None or self.agg is None:
            return
        assert isinstance(self.runner, MasterRunner)
        index = self.runner.get_worker_index(client_id)
        self.agg.merge(client_id, index, report, self._now_s())

    def on_test_start(self, **_kw: Any) -> None:
        now = self._now_s()
        if self.start_s is None:
            self.start_s = now
        self.stop_s = None
        if self.writer is None:
            self.writer = ResultsWriter(
                self._run_dir(now), self._meta(), now, offload=gevent.get_hub().threadpool.apply
            )
        if self._ticker is None:
            self._ticker = gevent.spawn(self._tick_loop)

    def on_test_stop(self, **_kw: Any) -> None:
        self.stop_s = self._now_s()

    def on_quit(self, **_kw: Any) -> None:
        self.finalize()

    def _tick_loop(self) -> None:
        while True:
            gevent.sleep(WORKER_REPORT_INTERVAL)
            with self._busy:  # finalize waits for a tick in progress (it may be paused)
                try:
                    self.tick()
                except Exception:
                    log.exception("results update failed")

    def tick(self) -> None:
        """One report interval: merge local samples, note missing workers, write files."""
        assert self.agg is not None
        if self.writer is None or self.writer.finalized:
            return
        if self.recorder is not None and self.role == "local":
            self.agg.merge(
                "local", 0, self.recorder.harvest(wire=False, pause=_yield), self._now_s()
            )
        self._note_missing()
        now = self._now_s()
        self._update_recent(now)
        self.writer.update(self.agg, now, self._duration(now), self.snapshot(), self._run_fields())

    def finalize(self) -> None:
        if self.agg is None or (self.writer is not None and self.writer.finalized):
            return
        if self._ticker is not None:
            with self._busy:
                self._ticker.kill(block=False)  # asleep between ticks: nothing is lost
        now = self._now_s()
        if self.recorder is not None and self.role == "local":
            self.agg.merge("local", 0, self.recorder.harvest(final=True, wire=False), now)
        started = self.writer is not None
        if self.writer is None:
            self.writer = ResultsWriter(
                self._run_dir(now), self._meta(), now, offload=gevent.get_hub().threadpool.apply
            )
            self.start_s = now
        self._note_missing()
        fields = self._run_fields(final=True)
        status = "failed" if not started else "partial" if fields["lost_workers"] else "complete"
        if not started:
            fields["failure_reason"] = "no test was started"
        self._update_recent(now)
        self.writer.finalize(self.agg, now, self._duration(now), self.snapshot(), fields, status)

    # -- master quit: wait for the final reports ---------------------------------------------
    def _wrap_master_quit(self) -> None:
        runner = self.runner
        assert isinstance(runner, MasterRunner)
        original = runner.quit

        def quit_after_final_reports() -> None:
            if not self._drained:
                self._drained = True
                try:
                    self._drain(runner)
                except Exception:
                    log.exception("waiting for the workers' final reports failed")
            original()

        runner.quit = quit_after_final_reports  # type: ignore[method-assign]

    def _drain(self, runner: MasterRunner) -> None:
        from locust.rpc import Message

        runner.stop(send_stop_to_client=False)
        for client in list(runner.clients.all):
            runner.server.send_to_client(Message("quit", None, client.id))
        stop_timeout = float(getattr(self.env, "stop_timeout", 0) or 0)
        budget_ns = int((float(_opt(self.env, "results_drain_s", 10.0)) + stop_timeout) * 1e9)
        deadline = now_ns() + budget_ns
        waiting = self._awaiting_final(runner)
        while waiting and now_ns() < deadline:
            gevent.sleep(0.05)
            waiting = self._awaiting_final(runner)
        self._drain_timed_out = waiting

    def _awaiting_final(self, runner: MasterRunner) -> list[str]:
        assert self.agg is not None
        out = []
        for client in list(runner.clients.all):
            info = self.agg.workers.get(client.id)
            if client.state != STATE_MISSING and (info is None or not info.final):
                out.append(client.id)
        return out

    def _note_missing(self) -> None:
        if isinstance(self.runner, MasterRunner):
            for client in list(self.runner.clients.all):
                if client.state == STATE_MISSING:
                    self._missing_seen.add(client.id)

    # -- views ------------------------------------------------------------------------------
    def _now_s(self) -> float:
        return epoch_ns() / 1e9

    def _duration(self, now: float) -> float:
        if self.start_s is None:
            return 0.0
        return (self.stop_s if self.stop_s is not None else now) - self.start_s

    def _update_recent(self, now: float) -> None:
        assert self.agg is not None
        counts = {row: t.count for row, t in self.agg.rows.items()}
        if self._prev is not None and now > self._prev[0]:
            t0, before = self._prev
            self._recent = {r: (c - before.get(r, 0)) / (now - t0) for r, c in counts.items()}
        self._prev = (now, counts)

    def snapshot(self) -> dict[str, Any]:
        assert self.agg is not None
        now = self._now_s()
        rows = []
        for (rt, name), t in sorted(self.agg.rows.items()):
            lat = t.hists["latency"]
            p = hdr.percentiles_ms(lat, (50.0, 90.0, 99.0, 99.9))
            lag = hdr.percentiles_ms(t.hists["lag"], (99.0,))[99.0]
            rows.append(
                {
                    "request_type": rt,
                    "name": name,
                    "count": t.count,
                    "failures": t.failures,
                    "rps": self._recent.get((rt, name), 0.0),
                    "p50_ms": p[50.0],
                    "p90_ms": p[90.0],
                    "p99_ms": p[99.0],
                    "p999_ms": p[99.9],
                    "max_ms": lat.get_max_value() / 1000.0 if lat.get_total_count() else None,
                    "lag_p99_ms": lag,
                }
            )
        workers = (
            sum(1 for c in self.runner.clients.all if c.state != STATE_MISSING)
            if isinstance(self.runner, MasterRunner)
            else 1
        )
        snap: dict[str, Any] = {
            "time_utc": now,
            "elapsed_s": self._duration(now),
            "state": self.runner.state,
            "users": self.runner.user_count,
            "workers": workers,
            "count": self.agg.count,
            "failures": self.agg.failures,
            "rps": sum(r["rps"] for r in rows),
            "rows": rows,
            "run_dir": str(self.writer.dir) if self.writer else None,
        }
        return dict(json_safe(snap))  # NaN → None: browsers reject NaN in JSON

    def _run_dir(self, now: float) -> Path:
        chosen = _opt(self.env, "results_dir", None)
        if chosen:
            return Path(chosen)
        return default_run_dir(_opt(self.env, "locustfile", None), now)

    def _meta(self) -> dict[str, Any]:
        opts = self.env.parsed_options
        options = (
            {
                k: v
                for k, v in sorted(vars(opts).items())
                if isinstance(v, str | int | float | bool | type(None) | list)
            }
            if opts is not None
            else {}
        )
        locustfile = options.get("locustfile")
        return {
            "scenario": Path(str(locustfile)).stem if locustfile else None,
            "locustfile": locustfile,
            "mode": self.role,
            "argv": list(sys.argv),
            "locust_options": options,
            "report_interval_s": WORKER_REPORT_INTERVAL,
            "hdr": {"unit": "us", "lowest": 1, "highest": 60_000_000, "significant_digits": 3},
            "events_sample_rate": options.get("events_sample_rate", 1.0),
            "events_max_per_s": options.get("events_max_per_s", DEFAULT_MAX_EVENTS_PER_S),
            **environment_info(),
        }

    def _run_fields(self, final: bool = False) -> dict[str, Any]:
        assert self.agg is not None
        workers = []
        ids = list(self.agg.workers) + [c for c in self._connected if c not in self.agg.workers]
        for wid in ids:
            info = self.agg.workers.get(wid)
            entry: dict[str, Any] = (
                info.as_json()
                if info
                else {"id": wid, "index": None, "reports": 0, "final_report": False}
            )
            entry["connected_utc"] = self._connected.get(wid)
            lost_reason = ""
            if wid in self._missing_seen:
                lost_reason = "heartbeat missing"
            elif final and self.role == "master" and not entry.get("final_report"):
                lost_reason = (
                    "no final report before the drain deadline"
                    if wid in self._drain_timed_out
                    else "no final report"
                )
            entry["lost"] = bool(lost_reason)
            entry["lost_reason"] = lost_reason
            workers.append(entry)
        rates = [w["min_events_rate"] for w in workers if "min_events_rate" in w]
        offered = sum(w.get("events_offered", 0) for w in workers)
        kept = sum(w.get("events_kept", 0) for w in workers)
        return {
            "workers": workers,
            "lost_workers": [w["id"] for w in workers if w["lost"]],
            "count": self.agg.count,
            "failures": self.agg.failures,
            "duration_s": self._duration(self._now_s()),
            "events_samples_offered": offered,
            "events_kept": kept,
            "events_min_applied_rate": min(rates) if rates else None,
            "events_thinned": bool(rates)
            and min(rates) < float(_opt(self.env, "events_sample_rate", 1.0)),
            "problems": list(self.agg.problems),
        }


def _yield() -> None:
    gevent.sleep(0)
