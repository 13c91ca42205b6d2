"""Time between the master and its workers: each worker's clock offset to the master, and how
long a worker waits for a silent master.

Registered by :mod:`echoswarm.plugins.collector` (importing this module adds its Locust options
and one ``init`` listener); the master side (:class:`MasterClock`) is made by
:mod:`echoswarm.plugins.writing`, which uses it to align the workers' timelines.

**Clock offsets** — every worker stamps its histograms' seconds and its events with its own wall
clock (``echoswarm.measure``); on several hosts those clocks disagree. The master measures each
worker's offset the way NTP does, over Locust's custom messages: it sends ``t1`` (its clock),
the worker notes ``t2`` on receipt and ``t3`` on answering (its clock), the master ``t4`` on
receipt; ``offset = ((t2 - t1) + (t3 - t4)) / 2`` (worker minus master) is off by at most half
the round trip's delay ``(t4 - t1) - (t3 - t2)``, so the estimate kept is the one from the round
trip with the smallest delay. A worker says ``hello`` once its handler is registered; the master
then pings it a few times at once and again every report interval. Latencies never use wall
clocks (they are same-host monotonic differences) and are not touched.

**Master timeout** — a stock Locust worker quits 60 s after its master's heartbeats stop
(``MASTER_HEARTBEAT_TIMEOUT``). ``--master-timeout-s S`` shortens (or lengthens) that in the
worker that is given it (the orchestrator's ``--master-timeout-s`` passes it to every worker);
without it Locust's default stands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gevent
import pyarrow as pa
import pyarrow.compute as pc
from locust import events
from locust.env import Environment
from locust.runners import WORKER_REPORT_INTERVAL, WorkerRunner

from echoswarm import argtypes
from echoswarm.measure import epoch_ns
from echoswarm.plugins import compat

log = logging.getLogger("echoswarm.plugins")
HELLO, PING, PONG = "echoswarm_clock_hello", "echoswarm_clock_ping", "echoswarm_clock_pong"
BURST = 5  # pings right after a worker says hello (an estimate before its first report)
BURST_GAP_S = 0.05
WARN_MS = 50.0  # an offset above this is worth a warning (NTP keeps hosts within a few ms)
EVENT_TIME_COLUMNS = ("start_ns", "intended_ns", "sent_ns", "received_ns")


@dataclass
class Estimate:
    """The best (smallest-delay) round trip so far to one worker."""

    offset_ns: int  # worker clock minus master clock
    delay_ns: int
    at_s: float  # master epoch seconds of that round trip
    samples: int = 1

    @property
    def bound_ns(self) -> int:
        return self.delay_ns // 2

    @property
    def significant(self) -> bool:
        """Larger than its own error bound: worth correcting (on one host it never is)."""
        return abs(self.offset_ns) > self.bound_ns


class MasterClock:
    """The master's side: pings, estimates, and the shift applied to each worker's reports."""

    def __init__(self, environment: Environment) -> None:
        self.env = environment
        runner = environment.runner
        assert runner is not None
        self.runner: Any = runner
        self.estimates: dict[str, Estimate] = {}
        self.shifts: dict[str, int] = {}  # whole seconds, fixed at a worker's first report
        self.last_shift: dict[str, int] = {}  # ns, the latest applied to its events
        self.warned: set[str] = set()
        runner.register_message(HELLO, self.on_hello)
        runner.register_message(PONG, self.on_pong)
        self._loop = gevent.spawn(self._ping_loop)

    def on_hello(self, environment: Any, msg: Any, **_kw: Any) -> None:
        gevent.spawn(self._burst, str(msg.node_id))

    def _burst(self, client_id: str) -> None:
        for _ in range(BURST):
            self._ping(client_id)
            gevent.sleep(BURST_GAP_S)

    def _ping_loop(self) -> None:
        while True:
            gevent.sleep(WORKER_REPORT_INTERVAL)
            for client in compat.workers(self.runner):
                if client.id in self.estimates and not compat.missing(client):
                    self._ping(client.id)

    def _ping(self, client_id: str) -> None:
        try:
            self.runner.send_message(PING, {"t1": epoch_ns()}, client_id=client_id)
        except Exception:  # a worker that just left: the next round will skip it
            log.debug("clock ping to %s failed", client_id, exc_info=True)

    def on_pong(self, environment: Any, msg: Any, **_kw: Any) -> None:
        t4 = epoch_ns()
        try:
            t1, t2, t3 = (int(msg.data[k]) for k in ("t1", "t2", "t3"))
        except (KeyError, TypeError, ValueError):
            return
        delay = (t4 - t1) - (t3 - t2)
        if delay < 0:  # impossible unless a clock stepped mid-exchange
            return
        offset = ((t2 - t1) + (t3 - t4)) // 2
        cid = str(msg.node_id)
        best = self.estimates.get(cid)
        if best is None or delay < best.delay_ns:
            samples = best.samples + 1 if best else 1
            self.estimates[cid] = best = Estimate(offset, delay, t4 / 1e9, samples)
        else:
            best.samples += 1
        if abs(best.offset_ns) / 1e6 > WARN_MS and best.significant and cid not in self.warned:
            self.warned.add(cid)
            log.warning(
                "worker %s: its clock is %.1f ms off the master's (± %.1f ms): its timelines "
                "are shifted to the master's clock; check its time sync (NTP)",
                cid,
                best.offset_ns / 1e6,
                best.bound_ns / 1e6,
            )

    # -- aligning a worker's report ---------------------------------------------------------
    def shift_ns(self, client_id: str) -> int:
        """How far this worker's clock is ahead of the master's (ns; 0 when it is within the
        estimate's error bound): the best estimate so far, for its event times."""
        est = self.estimates.get(client_id)
        shift = est.offset_ns if est is not None and est.significant else 0
        self.shifts.setdefault(client_id, round(shift / 1e9))
        self.last_shift[client_id] = shift
        return shift

    def shift_s(self, client_id: str) -> int:
        """The whole seconds its per-second histograms move, decided at its first report with
        data and kept for the run (a second's data never jumps between two seconds)."""
        return self.shifts.get(client_id, 0)

    def worker_fields(self, client_id: str) -> dict[str, Any]:
        """``run.json`` ``workers[]`` fields of one worker."""
        est = self.estimates.get(client_id)
        secs = self.shifts.get(client_id)
        events_ns = self.last_shift.get(client_id, 0)
        out: dict[str, Any] = {
            "clock_offset_ms": est.offset_ns / 1e6 if est else None,
            "clock_offset_bound_ms": est.bound_ns / 1e6 if est else None,
            "clock_samples": est.samples if est else 0,
            "clock_shift_s": secs or 0,
            "clock_event_shift_ms": events_ns / 1e6,
        }
        if est is not None and abs(est.offset_ns) / 1e6 > WARN_MS and est.significant:
            out["clock_warning"] = (
                f"clock {est.offset_ns / 1e6:+.1f} ms (± {est.bound_ns / 1e6:.1f} ms) off the "
                f"master's (> {WARN_MS:g} ms): its per-second histograms were shifted by "
                f"{secs or 0} s, its event times by the estimate ({events_ns / 1e6:.1f} ms last)"
            )
        return out


def align_report(report: dict[str, Any], secs: int) -> dict[str, Any]:
    """The report with its histogram seconds moved onto the master's clock (by whole seconds:
    the histograms are per second). Event batches are shifted by the estimate itself, by
    :func:`align_batch`, once decoded."""
    if not secs or not report.get("hist"):
        return report
    try:
        hist = [[rt, name, kind, int(sec) - secs, p] for rt, name, kind, sec, p in report["hist"]]
    except (TypeError, ValueError):
        return report  # malformed: the merge counts it against its worker
    return {**report, "hist": hist}


def align_batch(batch: pa.RecordBatch, shift_ns: int) -> pa.RecordBatch:
    """An event batch with its epoch timestamps moved onto the master's clock (exactly)."""
    if not shift_ns:
        return batch
    columns = []
    for name in batch.schema.names:
        col = batch.column(name)
        if name in EVENT_TIME_COLUMNS:
            col = pc.subtract(col, pa.scalar(shift_ns, col.type))
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def _worker_on_ping(environment: Any, msg: Any, **_kw: Any) -> None:
    t2 = epoch_ns()
    data = msg.data if isinstance(msg.data, dict) else {}
    environment.runner.send_message(PONG, {"t1": data.get("t1"), "t2": t2, "t3": epoch_ns()})


MASTER_TIMEOUT_RANGE = (1.0, 3600.0)
master_timeout = argtypes.float_between(*MASTER_TIMEOUT_RANGE, " s")


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    parser.add_argument(
        "--master-timeout-s",
        type=master_timeout,
        default=None,
        include_in_web_ui=False,
        help="a worker quits this long after its master's heartbeats stop (Locust's default: 60 s)",
    )


@events.init.add_listener
def _on_init(environment: Environment, **_kw: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        seconds = getattr(environment.parsed_options, "master_timeout_s", None)
        if seconds is not None:
            compat.set_master_heartbeat_timeout(float(seconds))
        runner.register_message(PING, _worker_on_ping)
        try:
            runner.send_message(HELLO, {})  # ready: the master may ping now
        except Exception:
            log.warning("could not ask the master for clock pings", exc_info=True)
