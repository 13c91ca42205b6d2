"""The measuring children of ``python -m bench wan`` (see :mod:`bench.wan`), one process each:

    python -m bench.wan_children timers --kind "epoll + timerfd" [--rate 4800] [--seconds 3]
    python -m bench.wan_children load --target HOST:PORT [--streams 240] [--frame-bytes 3200]
        [--interval-ms 100] [--warmup-s 2] [--seconds 6]
    python -m bench.wan_children pingpong --target HOST:PORT [--frame-bytes 3200] [--seconds 6]

Each prints one JSON line at the end; ``load`` also prints ``{"event": "start"}`` when its window
opens (so the parent reads the relay's CPU over the same window). ``timers`` runs one callback
per due time with one way of waiting and reports how late they ran and the CPU per wake-up;
``load`` keeps paced streams (a frame every interval per connection, timed by our own reactor)
and reports reply − intended latency and sender lag; ``pingpong`` is one blocking connection with
one frame in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import random
import selectors
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

TIMER_KINDS = (
    "asyncio call_at",
    "uvloop call_at",
    "asyncio + timerfd",
    "uvloop + timerfd",
    "epoll + timerfd",
    "epoll timeout",
    "thread sleep",
)
HEADER = struct.Struct("<QQ")  # seq, intended send time (ns), then padding to the frame size


def _cpu_now() -> float:
    """This process's CPU time (all threads), precise (CLOCK_PROCESS_CPUTIME_ID)."""
    return time.process_time()


def _stats_us(late_ns: list[int]) -> dict[str, Any]:
    late_ns.sort()
    n = len(late_ns)
    return {
        "count": n,
        "late_p50_us": late_ns[n // 2] / 1e3,
        "late_p99_us": late_ns[min(n - 1, int(n * 0.99))] / 1e3,
        "late_max_us": late_ns[-1] / 1e3,
    }


def _plan_dues(rate: int, seconds: float) -> list[int]:
    rnd = random.Random(1)
    t = time.monotonic_ns() + 100_000_000
    end = t + int(seconds * 1e9)
    dues = []
    while t < end:
        t += int(rnd.expovariate(rate) * 1e9)
        dues.append(t)
    return dues


def child_timers(kind: str, rate: int, seconds: float) -> dict[str, Any]:
    """Run one timed callback per due time with ``kind``'s way of waiting; lateness and CPU."""
    dues = _plan_dues(rate, seconds)
    late: list[int] = []
    cpu0 = _cpu_now()
    if kind in ("epoll + timerfd", "epoll timeout"):
        from echoswarm.streams.timerfd import reduce_timer_slack
        from echoswarm.wan.reactor import Reactor

        reduce_timer_slack()
        reactor = Reactor("timerfd" if "timerfd" in kind else "poll")
        cpu0 = _cpu_now()
        for due in dues:
            reactor.call_at(due, _recorder(late, due, len(dues), reactor.stop))
        reactor.run()
        reactor.close()
    elif kind.endswith("call_at") or kind.endswith("+ timerfd"):
        loop = _new_loop(kind.split()[0])
        done: asyncio.Future[None] = loop.create_future()

        def finish() -> None:
            done.set_result(None)

        if kind.endswith("call_at"):
            for due in dues:
                loop.call_at(due / 1e9, _recorder(late, due, len(dues), finish))
        else:
            _timerfd_on_loop(loop, dues, late, finish)
        loop.run_until_complete(done)
        loop.close()
    elif kind == "thread sleep":
        from echoswarm.streams.timerfd import reduce_timer_slack

        def sleeper() -> None:
            reduce_timer_slack()
            for due in dues:
                wait = due - time.monotonic_ns()
                if wait > 0:
                    time.sleep(wait / 1e9)
                late.append(time.monotonic_ns() - due)

        th = threading.Thread(target=sleeper)
        th.start()
        th.join()
    else:
        raise SystemExit(f"unknown timer kind {kind!r}")
    cpu = _cpu_now() - cpu0
    return {"kind": kind, **_stats_us(late), "cpu_us_per_timer": cpu / len(dues) * 1e6}


def _recorder(
    late: list[int], due: int, total: int, done: Callable[[], None]
) -> Callable[[], None]:
    def fire() -> None:
        late.append(time.monotonic_ns() - due)
        if len(late) == total:
            done()

    return fire


def _new_loop(which: str) -> asyncio.AbstractEventLoop:
    if which == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _timerfd_on_loop(
    loop: asyncio.AbstractEventLoop, dues: list[int], late: list[int], done: Callable[[], None]
) -> None:
    """One timerfd watched by the loop (``add_reader``), re-armed to the next due time."""
    from echoswarm.streams.timerfd import TimerFd

    tfd = TimerFd()
    heap = list(dues)
    heapq.heapify(heap)

    def on_fire() -> None:
        now = time.monotonic_ns()
        while heap and heap[0] <= now:
            late.append(now - heapq.heappop(heap))
        if heap:
            tfd.arm(heap[0])
        else:
            loop.remove_reader(tfd.fileno())
            tfd.close()
            done()

    loop.add_reader(tfd.fileno(), on_fire)
    tfd.arm(heap[0])


class _Stream:
    """One paced stream of the load child: sends on schedule, matches echoes in order."""

    __slots__ = ("sock", "seq", "intended", "buf", "out", "frame_pad", "lags")

    def __init__(self, sock: socket.socket, frame_bytes: int) -> None:
        self.sock = sock
        self.seq = 0
        self.intended: deque[int] = deque()
        self.buf = bytearray()
        self.out = bytearray()
        self.frame_pad = b"\x5a" * (frame_bytes - HEADER.size)
        self.lags: list[int] = []  # actual − intended send time, in the window


def child_load(
    target: str, streams: int, frame_bytes: int, interval_ms: float, warmup_s: float, seconds: float
) -> dict[str, Any]:
    """``streams`` paced connections (a frame every ``interval_ms``), timed by our reactor."""
    from echoswarm.wan.reactor import Reactor

    host, _, port = target.rpartition(":")
    reactor = Reactor("timerfd")
    interval = int(interval_ms * 1e6)
    t_start = time.monotonic_ns() + 200_000_000
    window = [t_start + int(warmup_s * 1e9), t_start + int((warmup_s + seconds) * 1e9)]
    latencies: list[int] = []
    state = {"failures": 0, "echoes": 0, "cpu0": 0.0}
    conns = []
    for i in range(streams):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        st = _Stream(sock, frame_bytes)
        conns.append(st)
        first = t_start + i * interval // streams  # spread over one interval

        reactor.add_reader(
            sock.fileno(), _on_echo(reactor, st, frame_bytes, latencies, window, state)
        )
        reactor.call_at(first, _sender(reactor, st, first, interval, window[1]))

    def open_window() -> None:
        state["cpu0"] = _cpu_now()
        print(json.dumps({"event": "start"}), flush=True)

    reactor.call_at(window[0], open_window)
    reactor.call_at(window[1] + 1_000_000_000, reactor.stop)  # a last second for late echoes
    reactor.run()
    cpu = _cpu_now() - state["cpu0"]
    for st in conns:
        st.sock.close()
    reactor.close()
    lags = [lag for st in conns for lag in st.lags[int(warmup_s * 1e9) // interval :]]
    lag = _ms_stats(lags)
    return {
        "echoes": state["echoes"],
        "failures": state["failures"],
        "cpu_s": cpu,
        "lag_p50_ms": lag["p50_ms"],
        "lag_p99_ms": lag["p99_ms"],
        **_ms_stats(latencies),
    }


def _sender(reactor: Any, st: _Stream, first: int, interval: int, end: int) -> Callable[[], None]:
    def tick() -> None:
        due = first + st.seq * interval
        frame = HEADER.pack(st.seq, due) + st.frame_pad
        st.lags.append(time.monotonic_ns() - due)
        st.intended.append(due)
        st.seq += 1
        if st.out:
            st.out += frame
        else:
            try:
                sent = st.sock.send(frame)
            except BlockingIOError:
                sent = 0
            if sent < len(frame):
                st.out += frame[sent:]
                reactor.add_writer(st.sock.fileno(), _flusher(reactor, st))
        nxt = first + st.seq * interval
        if nxt < end:
            reactor.call_at(nxt, tick)

    return tick


def _flusher(reactor: Any, st: _Stream) -> Callable[[], None]:
    def flush() -> None:
        try:
            sent = st.sock.send(st.out)
        except BlockingIOError:
            return
        del st.out[:sent]
        if not st.out:
            reactor.remove_writer(st.sock.fileno())

    return flush


def _on_echo(
    reactor: Any,
    st: _Stream,
    frame_bytes: int,
    latencies: list[int],
    window: list[int],
    state: dict[str, Any],
) -> Callable[[], None]:
    def readable() -> None:
        try:
            data = st.sock.recv(262144)
        except BlockingIOError:
            return
        now = time.monotonic_ns()
        if not data:
            state["failures"] += 1  # the path closed a stream: counted, and stop reading it
            reactor.remove_reader(st.sock.fileno())
            return
        st.buf += data
        while len(st.buf) >= frame_bytes:
            seq, intended = HEADER.unpack_from(st.buf)
            expected = st.intended.popleft()
            if intended != expected:
                state["failures"] += 1
            del st.buf[:frame_bytes]
            if window[0] <= intended < window[1]:
                latencies.append(now - intended)
                state["echoes"] += 1

    return readable


def _ms_stats(values_ns: list[int]) -> dict[str, Any]:
    if not values_ns:
        return {"count": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    values_ns.sort()
    n = len(values_ns)
    return {
        "count": n,
        "p50_ms": values_ns[n // 2] / 1e6,
        "p90_ms": values_ns[int(n * 0.9)] / 1e6,
        "p99_ms": values_ns[min(n - 1, int(n * 0.99))] / 1e6,
        "max_ms": values_ns[-1] / 1e6,
    }


def child_pingpong(target: str, frame_bytes: int, seconds: float) -> dict[str, Any]:
    """One connection, one frame in flight, blocking sockets: the plainest round trip."""
    host, _, port = target.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sel = selectors.DefaultSelector()  # (only to keep recv bounded in time)
    sel.register(sock, selectors.EVENT_READ)
    pad = b"\xa5" * (frame_bytes - HEADER.size)
    rtts: list[int] = []
    end = time.monotonic_ns() + int(seconds * 1e9)
    seq = 0
    while time.monotonic_ns() < end:
        t0 = time.monotonic_ns()
        frame = HEADER.pack(seq, t0) + pad
        sock.sendall(frame)
        got = 0
        while got < frame_bytes:
            chunk = sock.recv(frame_bytes - got)
            if not chunk:
                raise SystemExit("ping-pong: connection closed")
            got += len(chunk)
        rtts.append(time.monotonic_ns() - t0)
        seq += 1
    sock.close()
    return _ms_stats(rtts)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.wan_children")
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("timers")
    t.add_argument("--kind", choices=TIMER_KINDS, required=True)
    t.add_argument("--rate", type=int, default=4800)
    t.add_argument("--seconds", type=float, default=3.0)
    ld = sub.add_parser("load")
    ld.add_argument("--target", required=True)
    ld.add_argument("--streams", type=int, default=240)
    ld.add_argument("--frame-bytes", type=int, default=3200)
    ld.add_argument("--interval-ms", type=float, default=100.0)
    ld.add_argument("--warmup-s", type=float, default=2.0)
    ld.add_argument("--seconds", type=float, default=10.0)
    pp = sub.add_parser("pingpong")
    pp.add_argument("--target", required=True)
    pp.add_argument("--frame-bytes", type=int, default=3200)
    pp.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    if args.what == "timers":
        result = child_timers(args.kind, args.rate, args.seconds)
    elif args.what == "load":
        result = child_load(
            args.target, args.streams, args.frame_bytes, args.interval_ms, args.warmup_s,
            args.seconds,
        )  # fmt: skip
    else:
        result = child_pingpong(args.target, args.frame_bytes, args.seconds)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
