"""Test-only scenario: measured samples without a server, for the results-pipeline tests.

Each user "connects" (a timed short sleep), then runs a paced stream through the real
measurement core (``Schedule`` + ``InFlight``): every message is due every 5 ms, its "echo"
comes back after a short sleep, and every 97th echo is reported as a mismatch (a failure). Every
10th message also fires a plain Locust request without a ``sample`` (as a non-echoswarm user
would), which the results plugin must count too. The rows are ``synth connect``,
``synth paced msg`` and ``synth plain``.

With ``ECHOSWARM_TEST_BUSY_MASTER=PATH`` the master, at the first worker report once the test
runs (Locust's main greenlet is then waiting in its join), creates PATH
and then computes for 3 s without yielding, inside Locust's ``client_listener`` greenlet (where
our results plugin's merge also runs): the window a Ctrl-C must not get lost in.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import gevent
from locust import User, constant, events, task

from echoswarm.measure import InFlight, Schedule, Timer, next_conn_id, now_ns
from echoswarm.users.sink import LocustSink, next_user_id

INTERVAL_NS = 5_000_000


class SyntheticUser(User):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.sink = LocustSink(self.environment)
        self.user_id = next_user_id()
        self.conn_id = next_conn_id()
        t = Timer()
        gevent.sleep(0.001)
        self.sink(t.sample("synth", "connect", 0, user_id=self.user_id, conn_id=self.conn_id))
        self.inflight = InFlight(
            self.sink, "synth", "paced msg", user_id=self.user_id, conn_id=self.conn_id
        )
        self.schedule = Schedule(INTERVAL_NS)
        self.seq = 0

    @task
    def paced(self) -> None:
        seq = self.seq
        self.seq += 1
        gevent.sleep(self.schedule.wait_s(seq))
        self.inflight.add(seq, self.schedule.due_ns(seq), now_ns(), 64)
        gevent.sleep(0.0005)
        error = "echo mismatch (synthetic)" if seq % 97 == 13 else None
        self.inflight.received(seq, now_ns(), error)
        if seq % 10 == 0:
            t = Timer()
            gevent.sleep(0.0002)
            self.environment.events.request.fire(
                request_type="synth",
                name="plain",
                response_time=t.elapsed_ns() / 1e6,
                response_length=10,
                exception=None,
                context={},
            )


_busy_marker = os.environ.get("ECHOSWARM_TEST_BUSY_MASTER")
_environment: Any = None


@events.init.add_listener
def _keep_environment(environment: Any, **_kw: Any) -> None:
    global _environment
    _environment = environment


@events.worker_report.add_listener
def _busy_master(**_kw: Any) -> None:
    global _busy_marker
    if _busy_marker is None or _environment.runner.state != "running":
        return
    Path(_busy_marker).touch()
    _busy_marker = None
    deadline = time.monotonic() + 3.0  # bounded; no gevent call, so nothing else runs
    while time.monotonic() < deadline:
        pass
