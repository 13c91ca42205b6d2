"""The one adapter from measurement samples to Locust.

Every transport hands :class:`echoswarm.measure.Sample` records to a :class:`LocustSink`, which
records them in echoswarm's results (:mod:`echoswarm.plugins`) and in Locust's own stats (so the
web UI, the console table and Locust's CSV keep working) — in batches by default, or as one
Locust ``request`` event per sample with ``--request-events per-message``.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from typing import Any

import gevent
from locust.event import EventHook

import echoswarm.plugins.webui  # noqa: F401  (registers the web UI tab)
from echoswarm.measure import Sample, to_epoch_ns
from echoswarm.plugins import collector, compat  # (collector: registers the results plugin)


class EchoError(Exception):
    """A failed operation, as Locust's failure table shows it (the text is the sample's error)."""

    def __repr__(self) -> str:  # Locust groups failures by repr; keep it the plain message
        return str(self)


_user_ids = itertools.count(1)


def next_user_id() -> int:
    """A process-unique user number (the results plugin pairs it with the worker id)."""
    return next(_user_ids)


class LocustSink:
    """Callable sink: ``sink(sample)`` records the sample in echoswarm's results and in Locust's
    own stats (its table, CSV and web UI).

    By default samples are handed over in batches (:class:`SampleBatch`: every 0.1 s, at 512
    samples, and before every report and at the test's stop) — one ``request`` event per message
    cost more than the rest of the message's bookkeeping. ``--request-events per-message``
    restores one Locust ``request`` event per sample (with the ``sample`` keyword) for scenarios
    that bring their own listeners; batch listeners subscribe to :data:`on_samples`.
    """

    __slots__ = ("_take",)

    def __init__(self, environment: Any) -> None:
        parsed = getattr(environment, "parsed_options", None)
        if getattr(parsed, "request_events", "batched") == "per-message":
            self._take = _event_firer(environment)
        else:
            self._take = SampleBatch.of(environment).add

    def __call__(self, s: Sample) -> None:
        self._take(s)


def _event_firer(environment: Any) -> Callable[[Sample], None]:
    fire = environment.events.request.fire

    def take(s: Sample) -> None:
        fire(
            request_type=s.request_type,
            name=s.name,
            response_time=s.latency_ns / 1e6,
            response_length=s.nbytes,
            exception=None if s.error is None else EchoError(s.error),
            context={"user_id": s.user_id, "conn_id": s.conn_id, "seq": s.seq},
            start_time=to_epoch_ns(s.start_ns) / 1e9,
            url=None,
            response=None,
            sample=s,
        )
        on_samples.fire(environment=environment, samples=[s])

    return take


on_samples = EventHook()
"""Fired with ``environment=`` and ``samples=`` (a list) for every batch of samples."""

FLUSH_S = 0.1
FLUSH_AT = 512


class SampleBatch:
    """The pending samples of one environment (see :class:`LocustSink`)."""

    _batches: weakref.WeakKeyDictionary[Any, SampleBatch] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, environment: Any) -> SampleBatch:
        batch = cls._batches.get(environment)
        if batch is None:
            batch = cls._batches[environment] = cls(environment)
        return batch

    def __init__(self, environment: Any) -> None:
        self.env = environment
        self.pending: list[Sample] = []
        self._flusher: gevent.Greenlet | None = None
        ev = environment.events
        ev.test_stop.add_listener(lambda **_kw: self.flush())
        ev.quitting.add_listener(lambda **_kw: self.flush())
        collector.before_report(environment, self.flush)

    def add(self, s: Sample) -> None:
        pending = self.pending
        pending.append(s)
        if len(pending) >= FLUSH_AT:
            self.flush()
        elif self._flusher is None:
            self._flusher = gevent.spawn_later(FLUSH_S, self._timed_flush)

    def _timed_flush(self) -> None:
        self._flusher = None
        self.flush()

    def flush(self) -> None:
        samples = self.pending
        if not samples:
            return
        self.pending = []
        record = collector.recorder_of(self.env)
        stats = self.env.stats
        rows: dict[tuple[str, str], tuple[list[float], list[int]]] = {}
        for s in samples:
            if record is not None:
                record(s)
            key = (s.request_type, s.name)
            row = rows.get(key)
            if row is None:
                row = rows[key] = ([], [])
            row[0].append(s.latency_ns / 1e6)
            row[1].append(s.nbytes)
        for (rt, name), (times, lengths) in rows.items():
            compat.log_requests(stats, rt, name, times, lengths)
        for s in samples:
            if s.error is not None:
                stats.log_error(s.request_type, s.name, EchoError(s.error))
        on_samples.fire(environment=self.env, samples=samples)
