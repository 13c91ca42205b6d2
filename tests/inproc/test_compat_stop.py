"""Locust's ``Runner.stop`` logs its caller at debug level through ``inspect``; with
``compat.cheap_stop_logging`` that line is unchanged but no source file is read for it
(reading them held a worker's loop 40-80 ms at every test's end, timing replies late)."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import locust.runners
import pytest
from locust import User, constant, task
from locust.env import Environment

from echoswarm.plugins import compat


class _Idle(User):
    wait_time = constant(60)

    @task
    def nothing(self) -> None:
        pass


def _stop_line(caplog: pytest.LogCaptureFixture) -> str:
    runner = Environment(user_classes=[_Idle]).create_local_runner()
    runner.start(1, spawn_rate=1)
    spawning = runner.spawning_greenlet
    assert spawning is not None
    spawning.join(timeout=10)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="locust.runners"):
        runner.stop()
    assert runner.state == locust.runners.STATE_STOPPED
    runner.quit()
    (line,) = [r.getMessage() for r in caplog.records if "Stopping all users" in r.getMessage()]
    return line


def test_stop_logs_its_caller_without_reading_source(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(locust.runners, "inspect", inspect)  # stock Locust first
    stock = _stop_line(caplog)
    assert "called from " in stock and ".py:" in stock

    compat.cheap_stop_logging()
    compat.cheap_stop_logging()  # idempotent: installed once per process

    def no_source(*_a: Any, **_kw: Any) -> Any:
        raise AssertionError("Runner.stop read source files to log its caller")

    for name in ("getmodule", "findsource", "getsourcefile"):
        monkeypatch.setattr(inspect, name, no_source)
    assert _stop_line(caplog) == stock
