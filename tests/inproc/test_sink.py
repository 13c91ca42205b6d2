"""The sample sink: batched hand-over gives Locust's stats exactly what one request event per
message gave, and ``--request-events per-message`` still fires those events."""

from __future__ import annotations

import argparse
from typing import Any

import gevent
from locust.env import Environment
from locust.stats import RequestStats

from echoswarm.measure import Sample
from echoswarm.users.sink import FLUSH_S, LocustSink, SampleBatch, on_samples

MS = 1_000_000


def feed() -> list[Sample]:
    out = []
    for i in range(700):  # > one batch: 512 go at once, the rest on the timer
        name = "msg" if i % 4 else "connect"
        error = "timeout: no reply within 1 s" if i % 50 == 0 else None
        latency = (i % 130) * 997_000 + 3_456 + (2_500_000_000 if i == 7 else 0)
        out.append(Sample("tcp", name, 1_000 + i * MS, latency, 3200 + i % 3, error, 1, 2, i))
    return out


def environment(mode: str) -> Environment:
    parsed = argparse.Namespace(request_events=mode)
    env = Environment(events=None, parsed_options=parsed)
    env.create_local_runner()  # Locust's own stats listen to request events from here on
    return env


def table(stats: RequestStats) -> dict[str, Any]:
    entries = {
        key: (e.num_requests, e.num_failures, round(e.total_response_time, 6),
              e.min_response_time, e.max_response_time, dict(e.response_times),
              e.total_content_length, sum(e.num_reqs_per_sec.values()),
              sum(e.num_fail_per_sec.values()))
        for key, e in [*stats.entries.items(), (("Aggregated", ""), stats.total)]
    }  # fmt: skip
    errors = {k: (str(e.error), e.occurrences) for k, e in stats.errors.items()}
    return {"entries": entries, "errors": errors}


def test_batched_stats_equal_one_event_per_message() -> None:
    per_message = environment("per-message")
    batched = environment("batched")
    events: list[Any] = []
    per_message.events.request.add_listener(lambda **kw: events.append(kw["sample"]))
    seen: list[Sample] = []
    on_samples.add_listener(lambda environment, samples, **_kw: seen.extend(samples))
    one, many = LocustSink(per_message), LocustSink(batched)
    for s in feed():
        one(s)
        many(s)
    assert len(events) == 700  # per-message: one request event each, carrying the sample
    assert len(batched.stats.entries) == 0 or batched.stats.total.num_requests == 512
    gevent.sleep(FLUSH_S * 3)  # the rest is handed over on the batch timer
    assert table(batched.stats) == table(per_message.stats)
    assert seen.count(feed()[0]) == 2  # batch listeners saw every sample of both sinks
    SampleBatch.of(batched).flush()  # nothing pending: a no-op
    assert batched.stats.total.num_requests == 700
