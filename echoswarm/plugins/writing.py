"""The writing side of the results plugin, on the master (or a local runner): the workers'
reports merged into an :class:`~echoswarm.results.aggregate.Aggregate` and the results directory
written every report interval (:class:`~echoswarm.results.ResultsWriter`), finalized at quit.

The master's ``quit`` is wrapped (:mod:`~echoswarm.plugins.compat`) so that, after telling the
workers to quit, it waits (bounded) for every live worker's final report *before* Locust tears
the message loop down — stock Locust waits a fixed 0.5 s and can lose the tail of a run.
Finalization happens at Locust's ``quit`` event, after all of that.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import gevent.lock
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING, WORKER_REPORT_INTERVAL

from echoswarm import hdr
from echoswarm.measure import epoch_ns, now_ns
from echoswarm.plugins import compat
from echoswarm.plugins.clock import MasterClock, align_batch, align_report
from echoswarm.plugins.recording import (
    DEFAULT_MAX_EVENTS_PER_S,
    REPORT_KEY,
    Recording,
    option,
)
from echoswarm.results import ResultsWriter, default_run_dir, environment_info, json_safe
from echoswarm.results.aggregate import Aggregate
from echoswarm.results.gaps import WorkerView, gap_records

log = logging.getLogger("echoswarm.plugins")
WATCH_S = 0.25  # how often the master looks at its workers' heartbeat state
END_TOLERANCE_S = 1.0  # a test this close to its planned duration ran it (the timer's slack)


class Writing:
    """Merges and writes; ``local`` is this process's own recording (a local runner)."""

    def __init__(self, environment: Environment, local: Recording | None) -> None:
        self.env = environment
        self.runner: Any = environment.runner
        self.local = local
        self.master = local is None
        self.agg = Aggregate()
        self.writer: ResultsWriter | None = None
        self.start_s: float | None = None
        self.stop_s: float | None = None
        self._ticker: gevent.Greenlet | None = None
        self._busy = gevent.lock.Semaphore()
        self._connected: dict[str, float] = {}
        # Each time a worker's heartbeats stopped: when, its last report before that, and when
        # they came back (None while it is still missing).
        self._outages: dict[str, list[Outage]] = {}
        self._watcher: gevent.Greenlet | None = None
        self._shutdown_while_running = False  # Locust shut down (a signal) mid-test
        self._drained = False
        self._drain_timed_out: list[str] = []
        self._recent: dict[hdr.Row, float] = {}
        self._prev: tuple[float, dict[hdr.Row, int]] | None = None
        hdr.percentiles_ms(hdr.new_histogram())  # builds the cached bucket tables now
        ev = environment.events
        ev.test_start.add_listener(self.on_test_start)
        ev.test_stop.add_listener(self.on_test_stop)
        ev.quit.add_listener(self.on_quit)
        ev.quitting.add_listener(self.on_quitting)
        self.clock: MasterClock | None = None
        if self.master:
            self.clock = MasterClock(environment)
            ev.worker_report.add_listener(self.on_worker_report)
            ev.worker_connect.add_listener(self.on_worker_connect)
            compat.wrap_quit(self.runner, self._drain_before_quit)

    # -- master: merging the workers' reports ------------------------------------------------
    def on_worker_connect(self, client_id: str, **_kw: Any) -> None:
        self._connected.setdefault(client_id, self._now_s())

    def on_worker_report(self, client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        report = data.get(REPORT_KEY)
        if report is None:
            return
        index = self.runner.get_worker_index(client_id)
        shift = 0
        if self.clock is not None and (report.get("hist") or report.get("events")):
            # onto the master's clock: seconds now, the decoded event batch just after
            shift = self.clock.shift_ns(client_id)
            report = align_report(report, self.clock.shift_s(client_id))
        first_new = len(self.agg.batches)
        self.agg.merge(client_id, index, report, self._now_s())
        if shift:
            for i in range(first_new, len(self.agg.batches)):
                self.agg.batches[i] = align_batch(self.agg.batches[i], shift)

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
        if self.master and self._watcher is None:
            self._watcher = gevent.spawn(self._watch_workers)

    def on_test_stop(self, **_kw: Any) -> None:
        self.stop_s = self._now_s()

    def on_quit(self, **_kw: Any) -> None:
        self.finalize()

    def on_quitting(self, **_kw: Any) -> None:
        # Locust fires ``quitting`` in reverse order of registration: this listener runs before
        # the runner's own, so the state is still the test's. The run time and autostop quit
        # the runner (stopped) before ``quitting``; SIGTERM, SIGINT and Ctrl-C shut Locust down
        # while it runs.
        if str(self.runner.state) in (STATE_SPAWNING, STATE_RUNNING):
            self._shutdown_while_running = True

    def _tick_loop(self) -> None:
        while True:
            gevent.sleep(WORKER_REPORT_INTERVAL)
            with self._busy:  # finalize waits for a tick in progress (it may be paused)
                try:
                    self.tick()
                except Exception:
                    log.exception("results update failed")

    def _watch_workers(self) -> None:
        """When each worker went missing (and came back), to within ``WATCH_S``: the gap
        records need it more precisely than one report interval."""
        while True:
            self._note_missing()
            gevent.sleep(WATCH_S)

    def tick(self) -> None:
        """One report interval: merge local samples, note missing workers, write files."""
        if self.writer is None or self.writer.finalized:
            return
        if self.local is not None:
            report = self.local.harvest(wire=False)
            gevent.sleep(0)  # a slice at a time: the users' sends are due meanwhile
            self.agg.merge("local", 0, report, self._now_s())
            gevent.sleep(0)
        self._note_missing()
        now = self._now_s()
        self._update_recent(now)
        live = self.snapshot()
        gevent.sleep(0)
        self.writer.update(
            self.agg, now, self._duration(now), live, self._run_fields(), pause=_yield
        )

    def finalize(self) -> None:
        if self.writer is not None and self.writer.finalized:
            return
        if self._ticker is not None:
            with self._busy:
                self._ticker.kill(block=False)  # asleep between ticks: nothing is lost
        if self._watcher is not None:
            self._watcher.kill(block=False)
        now = self._now_s()
        if self.local is not None:
            self.agg.merge("local", 0, self.local.harvest(final=True, wire=False), now)
        started = self.writer is not None
        if self.writer is None:
            self.writer = ResultsWriter(
                self._run_dir(now), self._meta(), now, offload=gevent.get_hub().threadpool.apply
            )
            self.start_s = now
        self._note_missing()
        self.writer.flush_intervals(self.agg)  # every second counted before the gaps are
        fields = self._run_fields(final=True)
        fields.update(self._ending(now))
        degraded = fields["lost_workers"] or fields["gaps"]
        status = (
            "failed"
            if not started
            else "interrupted"
            if fields["ended_by"] == "shutdown" and fields["cut_short_s"]
            else "partial"
            if degraded
            else "complete"
        )
        if not started:
            fields["failure_reason"] = "no test was started"
        self._update_recent(now)
        self.writer.finalize(self.agg, now, self._duration(now), self.snapshot(), fields, status)

    def _ending(self, now: float) -> dict[str, Any]:
        """How the test ended, against its planned duration (Locust's ``--run-time``).

        ``ended_by``: ``run_time`` (it ran its planned time), ``stopped`` (stopped earlier by
        Locust itself: every user done — :mod:`echoswarm.plugins.autostop` — or the web UI's
        stop), ``shutdown`` (Locust shut down while the test ran: SIGTERM, SIGINT, Ctrl-C; a run
        so cut short of its planned time is ``interrupted``)."""
        planned = getattr(self.env.parsed_options, "run_time", None)
        planned_s = float(planned) if planned else None
        duration = self._duration(now)
        short = max(0.0, planned_s - duration) if planned_s is not None else 0.0
        cut_short = short if short > max(END_TOLERANCE_S, 0.02 * (planned_s or 0.0)) else 0.0
        if self._shutdown_while_running:
            ended_by = "shutdown"
        elif planned_s is not None and not cut_short:
            ended_by = "run_time"
        else:
            ended_by = "stopped"
        return {
            "planned_duration_s": planned_s,
            "ended_by": ended_by,
            "cut_short_s": cut_short if ended_by == "shutdown" else 0.0,
        }

    # -- master quit: wait for the final reports ---------------------------------------------
    def _drain_before_quit(self) -> None:
        """After telling the workers to quit, wait (up to ``--results-drain-s`` + the stop
        timeout) until every live worker's latest report says ``final``."""
        if self._drained:
            return
        self._drained = True
        runner = self.runner
        try:
            runner.stop(send_stop_to_client=False)
            compat.tell_workers_to_quit(runner)
            stop_timeout = float(getattr(self.env, "stop_timeout", 0) or 0)
            drain_s = float(option(self.env, "results_drain_s", 10.0)) + stop_timeout
            deadline = now_ns() + int(drain_s * 1e9)
            waiting = self._awaiting_final(runner)
            while waiting and now_ns() < deadline:
                gevent.sleep(0.05)
                waiting = self._awaiting_final(runner)
            self._drain_timed_out = waiting
        except Exception:
            log.exception("waiting for the workers' final reports failed")

    def _awaiting_final(self, runner: Any) -> list[str]:
        out = []
        for client in compat.workers(runner):
            info = self.agg.workers.get(client.id)
            if not compat.missing(client) and (info is None or not info.final):
                out.append(client.id)
        return out

    def _note_missing(self) -> None:
        if not self.master:
            return
        now = self._now_s()
        for client in compat.workers(self.runner):
            outages = self._outages.setdefault(client.id, [])
            open_outage = outages[-1] if outages and outages[-1].healed_s is None else None
            if compat.missing(client):
                if open_outage is None:
                    info = self.agg.workers.get(client.id)
                    last = info.last_report_s if info is not None else None
                    outages.append(Outage(now, last))
            elif open_outage is not None:
                open_outage.healed_s = now  # Locust: "self-healed with heartbeat"

    # -- views ------------------------------------------------------------------------------
    def _now_s(self) -> float:
        return epoch_ns() / 1e9

    def _duration(self, now: float) -> float:
        if self.start_s is None:
            return 0.0
        return (self.stop_s if self.stop_s is not None else now) - self.start_s

    def _update_recent(self, now: float) -> None:
        counts = {row: t.count for row, t in self.agg.rows.items()}
        if self._prev is not None and now > self._prev[0]:
            t0, before = self._prev
            self._recent = {r: (c - before.get(r, 0)) / (now - t0) for r, c in counts.items()}
        self._prev = (now, counts)

    def snapshot(self) -> dict[str, Any]:
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
            sum(1 for c in compat.workers(self.runner) if not compat.missing(c))
            if self.master
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
        chosen = option(self.env, "results_dir", None)
        if chosen:
            return Path(chosen)
        return default_run_dir(option(self.env, "locustfile", None), now)

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
            "mode": "master" if self.master else "local",
            "argv": list(sys.argv),
            "locust_options": options,
            "report_interval_s": WORKER_REPORT_INTERVAL,
            "hdr": {"unit": "us", "lowest": 1, "highest": 60_000_000, "significant_digits": 3},
            "events_sample_rate": options.get("events_sample_rate", 1.0),
            "events_max_per_s": options.get("events_max_per_s", DEFAULT_MAX_EVENTS_PER_S),
            **environment_info(),
        }

    def _run_fields(self, final: bool = False) -> dict[str, Any]:
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
            if self.clock is not None:
                entry.update(self.clock.worker_fields(wid))
            else:  # a local runner: the users run in this very process, on this clock
                entry.update(clock_offset_ms=0.0, clock_offset_bound_ms=0.0)
            outages = self._outages.get(wid, [])
            entry["missing_since_utc"] = outages[-1].since_s if outages else None
            entry["healed_utc"] = outages[-1].healed_s if outages else None
            entry["outages"] = len(outages)
            lost_reason = ""
            if outages and outages[-1].healed_s is None:
                lost_reason = "heartbeat missing"
            elif final and self.master and not entry.get("final_report"):
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
            and min(rates) < float(option(self.env, "events_sample_rate", 1.0)),
            "problems": list(self.agg.problems),
            "gaps": self._gaps(workers),
            "clock_warnings": [w["clock_warning"] for w in workers if w.get("clock_warning")],
        }

    def _gaps(self, workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.master or not any(self._outages.values()):
            return []
        views = []
        for w in workers:
            common = dict(
                id=w["id"],
                index=w.get("index"),
                connected_s=w.get("connected_utc"),
                first_report_s=w.get("first_report_utc"),
                samples=int(w.get("samples", 0)),
                final_report=bool(w.get("final_report")),
            )
            outages: list[Outage | None] = list(self._outages.get(w["id"], [])) or [None]
            for o in outages:  # one view per outage: its own "last report before the loss"
                views.append(
                    WorkerView(
                        **common,
                        last_report_s=o.last_report_s if o else w.get("last_report_utc"),
                        missing_since_s=o.since_s if o else None,
                        healed_s=o.healed_s if o else None,
                    )
                )
        counts = self.writer.second_counts if self.writer is not None else {}
        end = self.stop_s if self.stop_s is not None else self._now_s()  # the load's end
        return gap_records(views, counts, end, WORKER_REPORT_INTERVAL)


@dataclass
class Outage:
    """A worker's heartbeats stopped at ``since_s`` (and came back at ``healed_s``)."""

    since_s: float
    last_report_s: float | None  # its last report before that
    healed_s: float | None = None


def _yield() -> None:
    gevent.sleep(0)
