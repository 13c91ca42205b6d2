"""The recording side of the results plugin, in every process that runs users (a worker, or a
local runner): every Locust ``request`` event into a :class:`~echoswarm.results.recorder.Recorder`
(the hot path), harvested into one report per Locust stats report.

A worker ships its report inside Locust's own ``report_to_master`` data (every 3 s, plus the
final one Locust sends on quit, plus one more when the worker quits on its own); a local runner
hands it to its :mod:`~echoswarm.plugins.writing` side directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import STATE_STOPPED, WORKER_REPORT_INTERVAL

from echoswarm.measure import Sample, epoch_ns
from echoswarm.plugins import compat
from echoswarm.results.events import warm_up
from echoswarm.results.recorder import Recorder, foreign_sample

log = logging.getLogger("echoswarm.plugins")
REPORT_KEY = "echoswarm"
PREPARE_EVERY_S = 0.1
MAX_SLICES = 40  # per wake-up: up to 20,000 events or 40 closed seconds, each its own slice
DEFAULT_MAX_EVENTS_PER_S = 20_000


def option(environment: Environment, name: str, default: Any) -> Any:
    """A parsed Locust option of the results plugin (its default when absent or None)."""
    value = getattr(environment.parsed_options, name, None)
    return default if value is None else value


class Recording:
    """Records this process's samples; a worker also ships them."""

    def __init__(self, environment: Environment, worker: bool) -> None:
        self.env = environment
        self.runner: Any = environment.runner
        self.recorder = self._new_recorder()
        self.before_harvest: list[Callable[[], None]] = []  # e.g. hand over batched samples
        warm_up()
        self._preparer = gevent.spawn(self._prepare_loop)
        ev = environment.events
        ev.request.add_listener(self.on_request)
        if worker:
            ev.test_start.add_listener(self.on_worker_test_start)
            ev.report_to_master.add_listener(self.on_report_to_master)
            ev.quitting.add_listener(self.on_worker_quitting)

    def _new_recorder(self) -> Recorder:
        per_s = int(option(self.env, "events_max_per_s", DEFAULT_MAX_EVENTS_PER_S))
        return Recorder(
            float(option(self.env, "events_sample_rate", 1.0)),
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
        if sample is None:
            sample = foreign_sample(
                request_type, name, response_time, response_length, exception, start_time
            )
        self.recorder.record(sample)

    def _prepare_loop(self) -> None:
        """Make the next report a slice at a time while the test runs (see
        ``Recorder.prepare``), yielding to the users between slices."""
        while True:
            gevent.sleep(PREPARE_EVERY_S)
            now_s = epoch_ns() // 1_000_000_000
            for _ in range(MAX_SLICES):
                if not self.recorder.prepare(now_s):
                    break
                gevent.sleep(0)

    def record(self, sample: Sample) -> None:
        self.recorder.record(sample)

    def harvest(self, final: bool = False, wire: bool = True) -> dict[str, Any]:
        """The report of everything recorded since the last one (see ``Recorder.harvest``)."""
        for hook in self.before_harvest:
            hook()
        return self.recorder.harvest(final=final, wire=wire, pause=_yield)

    # -- worker ------------------------------------------------------------------------------
    def on_worker_test_start(self, **_kw: Any) -> None:
        # The master's options (sample rate, cap) reach the worker just before test_start.
        if self.recorder.pending() == 0:
            self.recorder = self._new_recorder()

    def on_report_to_master(self, client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        # After the runner has stopped, every user is gone: this report holds all there was.
        data[REPORT_KEY] = self.harvest(final=self.runner.state == STATE_STOPPED)

    def on_worker_quitting(self, **_kw: Any) -> None:
        # A worker that quits on its own (Ctrl-C, SIGTERM) gets no final report from stock
        # Locust; stop the users and send one, before the worker's "quit" message goes out.
        runner = self.runner
        try:
            if runner.state != STATE_STOPPED:
                runner.stop()
            compat.send_report_now(runner)
        except Exception:
            log.exception("could not send the final results report")


def _yield() -> None:
    gevent.sleep(0)
