"""The messages between a Locust process and its gRPC driver process (msgpack arrays).

Locust side → driver:

* ``[OPEN, rid, target, timeout_s, user_id, conn_id, row_name]`` — open a channel (id ``rid``);
  the ``connect`` sample and ``[OPENED, rid, error|None]`` come back;
* ``[CALL, rid, channel_id, spec]`` — run one user task (``spec``: see
  ``grpc_calls.CallSpec``); its samples and then ``[ENDED, rid, error|None]`` come back;
* ``[STOP, rid]`` — the user is stopping: drain the call and end it;
* ``[CLOSE, channel_id]``; ``[QUIT]``.

Driver → Locust side: ``[HELLO, pid]`` once ready; ``[SAMPLES, [row, ...]]`` with
``row = [rid, *Sample fields in declaration order]``; ``OPENED``; ``ENDED``.
"""

from __future__ import annotations

from typing import Any

from echoswarm.measure import Sample

HELLO = "hello"
OPEN = "open"
OPENED = "opened"
CALL = "call"
ENDED = "ended"
STOP = "stop"
CLOSE = "close"
QUIT = "quit"
SAMPLES = "s"

BATCH = 256
"""Samples per batch at most (a batch is one write and one wake-up of the Locust side)."""
FLUSH_S = 0.02
"""A sample waits at most this long before its batch is sent."""


def sample_row(rid: int, s: Sample) -> list[Any]:
    return [
        rid,
        s.request_type,
        s.name,
        s.start_ns,
        s.latency_ns,
        s.nbytes,
        s.error,
        s.user_id,
        s.conn_id,
        s.seq,
        s.intended_ns,
        s.sent_ns,
        s.received_ns,
    ]
