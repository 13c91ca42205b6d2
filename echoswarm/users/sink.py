"""The one adapter from measurement samples to Locust's ``request`` event.

Every transport hands :class:`echoswarm.measure.Sample` records to a :class:`LocustSink`, which
fires Locust's own ``request`` event (so the web UI, the console table and Locust's CSV keep
working) with the full sample attached as the extra ``sample`` keyword, which the results
plugin (:mod:`echoswarm.plugins.collector`) reads.
"""

from __future__ import annotations

import itertools
from typing import Any

import echoswarm.plugins.collector  # noqa: F401  (registers the results plugin)
import echoswarm.plugins.webui  # noqa: F401  (registers the web UI tab)
from echoswarm.measure import Sample, to_epoch_ns


class EchoError(Exception):
    """A failed operation, as Locust's failure table shows it (the text is the sample's error)."""

    def __repr__(self) -> str:  # Locust groups failures by repr; keep it the plain message
        return str(self)


_user_ids = itertools.count(1)


def next_user_id() -> int:
    """A process-unique user number (the results plugin pairs it with the worker id)."""
    return next(_user_ids)


class LocustSink:
    """Callable sink: ``sink(sample)`` fires ``environment.events.request`` for it."""

    __slots__ = ("_fire",)

    def __init__(self, environment: Any) -> None:
        self._fire = environment.events.request.fire

    def __call__(self, s: Sample) -> None:
        self._fire(
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
