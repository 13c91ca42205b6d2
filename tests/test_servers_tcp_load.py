"""Load held (issue 7): every TCP model but ``simple`` serves 1,000 concurrent connections doing
round trips, with zero errors, in bounded time; and 1,000 idle connections neither stall other
clients nor cost unbounded memory in the models that serve all connections at once.

The client is an asyncio driver in the test process. All 1,000 connections are opened first.
For the models that serve every connection at once, each connection then does one round trip
and waits until all 1,000 have done theirs — so 1,000 connections are provably being served at
the same moment — before its remaining trips. The pool models (prefork, prethread) serve
``--workers`` connections at a time by design; their other connections wait in the backlog and
are served in turn, so they run without that barrier (a barrier would deadlock them).

Each model's wall time and error count are printed (``pytest -s``) for the README."""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from dataclasses import dataclass, field

import psutil
import pytest

from servers.tcp import MODELS
from tests import procs

CONNECTIONS = 1000
ROUND_TRIPS = 3
MESSAGE = 64
STEP_TIMEOUT = 60.0  # generous: a pooled model serves queued connections one batch at a time
SERVED_ONE_AT_A_TIME = ("prefork", "prethread")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@dataclass
class Outcome:
    wall_s: float = 0.0
    ok: int = 0
    errors: list[str] = field(default_factory=list)


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need <= hard or (soft < need and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {soft} is below the {need} this test needs")


async def drive(port: int, barrier: bool) -> Outcome:
    outcome = Outcome()
    all_connected = asyncio.Event()
    first_trip_done = asyncio.Event()
    counts = {"connected": 0, "first": 0}

    def count(key: str, event: asyncio.Event) -> None:
        counts[key] += 1
        if counts[key] == CONNECTIONS:
            event.set()

    async def client(i: int) -> None:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), STEP_TIMEOUT
            )
            count("connected", all_connected)
            await asyncio.wait_for(all_connected.wait(), STEP_TIMEOUT)
            for trip in range(ROUND_TRIPS):
                data = (b"%04d:%02d:" % (i, trip)).ljust(MESSAGE, b".")
                writer.write(data)
                got = await asyncio.wait_for(reader.readexactly(MESSAGE), STEP_TIMEOUT)
                if got != data:
                    raise AssertionError(f"echo mismatch: {got[:16]!r} != {data[:16]!r}")
                if trip == 0 and barrier:
                    count("first", first_trip_done)
                    await asyncio.wait_for(first_trip_done.wait(), STEP_TIMEOUT)
            outcome.ok += 1
        except Exception as exc:  # every failure is counted and reported, none is hidden
            outcome.errors.append(f"conn {i}: {exc.__class__.__name__}: {exc}")
            all_connected.set()  # release the others so the test ends and reports
            first_trip_done.set()
        finally:
            if writer is not None:
                writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(CONNECTIONS)))
    outcome.wall_s = time.perf_counter() - began
    return outcome


@pytest.mark.parametrize("model", [m for m in MODELS if m != "simple"])
def test_thousand_concurrent_connections(
    model: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    raise_nofile(CONNECTIONS + 256)
    p = procs.server("tcp", "--model", model, tmp_path=tmp_path_factory.mktemp(model))
    try:
        outcome = asyncio.run(drive(p.port, barrier=model not in SERVED_ONE_AT_A_TIME))
    finally:
        rc = p.stop()
    line = (
        f"tcp {model}: {CONNECTIONS} connections x {ROUND_TRIPS} round trips of {MESSAGE} B: "
        f"{outcome.wall_s:.2f} s, {len(outcome.errors)} errors"
    )
    print(line)
    request.node.user_properties.append(("load", line))
    assert not outcome.errors, f"{len(outcome.errors)} errors, first: {outcome.errors[:3]}"
    assert outcome.ok == CONNECTIONS
    assert rc == 0
    assert "Traceback" not in p.stderr_text()


ALL_AT_ONCE_IN_ONE_PROCESS = ["asyncio", "uvloop", "select", "epoll", "thread", "select_prethread"]


@pytest.mark.parametrize("model", ALL_AT_ONCE_IN_ONE_PROCESS)
def test_thousand_idle_connections_neither_stall_others_nor_cost_much(
    model: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    """1,000 clients that connect and never send: another client is still answered at once and
    the server's own memory grows by a bounded amount (thread: a stack and a 64 KiB buffer per
    connection; the event loops: a few hundred bytes). The pool models (prefork, prethread) and
    simple are stalled by idle clients by design, and fork pays a process per idle client."""
    raise_nofile(CONNECTIONS + 256)
    p = procs.server("tcp", "--model", model, tmp_path=tmp_path_factory.mktemp(model))
    server = psutil.Process(p.pid)
    idle: list[socket.socket] = []
    try:
        before = server.memory_full_info().uss
        idle = [socket.create_connection(("127.0.0.1", p.port), timeout=30) for _ in range(1000)]
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as active:
            began = time.perf_counter()
            active.sendall(b"are you there")
            assert active.recv(64) == b"are you there"
            answered_s = time.perf_counter() - began
        grown_mb = (server.memory_full_info().uss - before) / 1e6
    finally:
        for sock in idle:
            sock.close()
        rc = p.stop()
    line = f"tcp {model}: 1000 idle connections: answered in {answered_s:.3f} s, +{grown_mb:.1f} MB"
    print(line)
    request.node.user_properties.append(("idle", line))
    assert answered_s < 2.0
    assert grown_mb < (160 if model == "thread" else 32)
    assert rc == 0
