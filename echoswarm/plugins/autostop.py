"""A Locust plugin: end the test as soon as every user has stopped by itself.

Scenarios with a finite load (``--connections-per-user``, ``--images``) stop their users with
``StopUser`` when their work is done; stock Locust then idles until ``--run-time``. Importing
this module (a locustfile does, before defining its users) makes the run end instead:

* each **worker**, once its users are spawned, none is left and a regular stats report has
  carried their last samples to the master, tells it (message ``echoswarm_users_done``) — so the
  results never depend on the final report a quitting worker sends (a test that ends within a
  second of starting once lost one);
* the **master**, once its spawning is complete and every connected worker has said so, quits
  the way ``--run-time`` does (headless) or stops the test (web UI), so the results plugin still
  collects every worker's final report;
* a **local** runner (no master) does both checks itself.

This is what makes a sweep cell end when its load is done — within one report interval (3 s) —
rather than at its time limit (:mod:`echoswarm.sweep` also has a slower fallback for scenarios
without this plugin).
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
import locust  # noqa: F401,I001  (gevent monkey-patching first)
from locust import events
from locust.runners import (
    STATE_CLEANUP,
    STATE_RUNNING,
    STATE_STOPPED,
    STATE_STOPPING,
    LocalRunner,
    MasterRunner,
    WorkerRunner,
)

from echoswarm.plugins import compat

MESSAGE = "echoswarm_users_done"
CHECK_S = 0.1  # how often a worker (or local runner) looks at its user count
ENDED = (STATE_STOPPING, STATE_STOPPED, STATE_CLEANUP)

log = logging.getLogger("echoswarm.autostop")


class _AutoStop:
    def __init__(self, environment: Any) -> None:
        self.env = environment
        self.runner = environment.runner
        self.done_workers: set[str] = set()
        self.spawned = False
        self.watcher: gevent.Greenlet | None = None
        self.ending = False
        self.reports = 0  # worker: regular reports sent to the master so far
        self.counting = False

    def on_report_to_master(self, **_kw: Any) -> None:
        self.reports += 1

    # -- worker / local: watch the user count ------------------------------------------------
    def on_test_start(self, **_kw: Any) -> None:
        self.ending = False
        if isinstance(self.runner, MasterRunner):
            return
        if isinstance(self.runner, WorkerRunner) and not self.counting:
            # Registered now, after every plugin's init, so it runs after the results plugin
            # has put the samples into the report: counted means "in this report".
            self.env.events.report_to_master.add_listener(self.on_report_to_master)
            self.counting = True
        if self.watcher is None or self.watcher.dead:
            self.watcher = self.runner.greenlet.spawn(self._watch_users)

    def _state(self) -> str:
        runner = self.runner
        return str(runner.worker_state if isinstance(runner, WorkerRunner) else runner.state)

    def _watch_users(self) -> None:
        # Until the test stops (the runner's greenlet group is killed on quit). Spawning may not
        # have begun yet when this starts: idle means "running, spawning over, nobody left".
        told: bool | None = None
        idle_since_report: int | None = None  # self.reports when the worker went idle
        while self._state() not in ENDED:
            idle = self._state() == STATE_RUNNING and self.runner.user_count == 0
            if isinstance(self.runner, WorkerRunner):
                if not idle:
                    idle_since_report = None
                elif idle_since_report is None:
                    idle_since_report = self.reports
                # "Done" only once a regular report has carried every sample to the master:
                # then nothing depends on the final report that quitting asks for.
                shipped = idle_since_report is not None and self.reports > idle_since_report
                if shipped != told:  # edge-triggered: a later spawn makes the worker busy again
                    self.runner.send_message(MESSAGE, {"done": shipped})
                    told = shipped
            elif idle:
                self._end()
                return
            gevent.sleep(CHECK_S)

    # -- master: every worker idle after spawning is complete -------------------------------
    def on_spawning_complete(self, **_kw: Any) -> None:
        if isinstance(self.runner, MasterRunner):
            self.spawned = True
            self._maybe_end()

    def on_worker_message(self, msg: Any, **_kw: Any) -> None:
        if msg.data.get("done"):
            self.done_workers.add(str(msg.node_id))
        else:
            self.done_workers.discard(str(msg.node_id))
        self._maybe_end()

    def _maybe_end(self) -> None:
        workers = compat.worker_ids(self.runner)
        if self.spawned and workers and workers <= self.done_workers:
            self._end()

    def _end(self) -> None:
        if self.ending:
            return
        self.ending = True
        log.info("every user has stopped: ending the test")
        headless = bool(getattr(self.env.parsed_options, "headless", False))
        # Not from this greenlet: a master's message handler must keep the message loop free
        # for the workers' final reports while quitting waits for them.
        gevent.spawn(self.runner.quit if headless else self.runner.stop)


@events.init.add_listener
def _on_init(environment: Any, **_kw: Any) -> None:
    runner = environment.runner
    if not isinstance(runner, LocalRunner | MasterRunner | WorkerRunner):
        return
    plugin = _AutoStop(environment)
    environment.events.test_start.add_listener(plugin.on_test_start)
    environment.events.spawning_complete.add_listener(plugin.on_spawning_complete)
    if isinstance(runner, MasterRunner):
        runner.register_message(MESSAGE, plugin.on_worker_message)
