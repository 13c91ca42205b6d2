"""Lean reference clients for ``python -m bench overhead``: no Locust, no gevent, no echoswarm
users — what an engineer would write in an afternoon with each transport's own asyncio library.

    python -m bench.reference --transport grpc|ws|tcp --target T --streams N --seconds S

* gRPC: ``grpc.aio``, one channel per stream (as our users: N HTTP/2 connections), one Bidi
  call each; a writer coroutine paced with ``asyncio.sleep`` and ``async for`` over the replies.
* TCP: ``asyncio.open_connection``; ``writer.write`` of the stamped frame, ``readexactly``.
* WebSocket: the ``websockets`` client; ``send`` of the stamped binary frame, ``async for``.

Every stream sends ``--frame-bytes`` (3200) every ``--interval-ms`` (100) from its own start,
the starts spread evenly over one interval (as Locust's spawning spreads our users); latency is
reply − intended send time, exactly as our users measure it; each echo's payload is compared
with what was sent. After every stream has connected and ``--settle-s`` has passed, a window of
``--seconds`` collects every reply whose message was intended inside it, and the process's CPU
time (every thread: gRPC's C-core ones too). Prints one JSON line, the same fields as the
``overhead`` mode of ``bench.driver``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import selectors
import socket
import sys
from typing import Any

from bench.stats import summary
from echoswarm.measure import now_ns
from echoswarm.wire import FrameTemplate, read_stamps

MS = 1_000_000


class Window:
    """The measuring window: latencies (ns) and lags of messages intended inside it."""

    def __init__(self) -> None:
        self.start_ns = 1 << 62
        self.end_ns = 1 << 62
        self.latencies: list[int] = []
        self.lags: list[int] = []
        self.failures = 0

    def reply(self, intended: int, sent: int, received: int, ok: bool) -> None:
        if self.start_ns <= intended < self.end_ns:
            if ok:
                self.latencies.append(received - intended)
                self.lags.append(sent - intended)
            else:
                self.failures += 1


async def _sleep_until(due_ns: int) -> None:
    delay = due_ns - now_ns()
    if delay > 0:
        await asyncio.sleep(delay / 1e9)


async def tcp_stream(target: str, args: argparse.Namespace, t0: int, win: Window) -> None:
    host, _, port = target.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    size = args.frame_bytes
    template = FrameTemplate(size)
    payload = template.payload()

    async def receive() -> None:
        while True:
            data = await reader.readexactly(size)
            seq, intended, sent = read_stamps(data)
            win.reply(intended, sent, now_ns(), data[32:] == payload)

    async def send(seq: int, due: int) -> None:
        writer.write(bytes(template.stamp(seq, due, now_ns())))

    task = asyncio.ensure_future(receive())
    await _pace(args, t0, send)
    task.cancel()
    writer.close()


async def ws_stream(target: str, args: argparse.Namespace, t0: int, win: Window) -> None:
    import websockets

    template = FrameTemplate(args.frame_bytes)
    payload = template.payload()
    async with websockets.connect(target, compression=None, max_size=None) as ws:

        async def receive() -> None:
            async for data in ws:
                assert isinstance(data, bytes)
                seq, intended, sent = read_stamps(data)
                win.reply(intended, sent, now_ns(), data[32:] == payload)

        async def send(seq: int, due: int) -> None:
            await ws.send(bytes(template.stamp(seq, due, now_ns())))

        task = asyncio.ensure_future(receive())
        await _pace(args, t0, send)
        task.cancel()


async def grpc_stream(target: str, args: argparse.Namespace, t0: int, win: Window) -> None:
    import grpc

    from protos import echo_pb2, echo_pb2_grpc

    payload = bytes(args.frame_bytes - 32)
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        await channel.channel_ready()
        call = echo_pb2_grpc.EchoStub(channel).Bidi()

        async def receive() -> None:
            async for reply in call:
                win.reply(reply.intended_send_ns, reply.sent_ns, now_ns(), reply.payload == payload)

        async def send(seq: int, due: int) -> None:
            frame = echo_pb2.Frame(seq=seq, intended_send_ns=due, sent_ns=now_ns(), payload=payload)
            await call.write(frame)

        task = asyncio.ensure_future(receive())
        await _pace(args, t0, send)
        task.cancel()
        call.cancel()


async def _pace(args: argparse.Namespace, t0: int, send: Any) -> None:
    """Send message i at t0 + i * interval until the run's end."""
    interval = int(args.interval_ms * MS)
    end = t0 + int((args.settle_s + args.seconds + args.tail_s) * 1e9)
    seq = 0
    while (due := t0 + seq * interval) < end:
        await _sleep_until(due)
        await send(seq, due)
        seq += 1


CLIENTS = {"tcp": tcp_stream, "ws": ws_stream, "grpc": grpc_stream}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    win = Window()
    interval = int(args.interval_ms * MS)
    start = now_ns() + 500 * MS  # connect first: every stream starts after this
    run = CLIENTS[args.transport]
    tasks = [
        asyncio.ensure_future(run(args.target, args, start + i * interval // args.streams, win))
        for i in range(args.streams)
    ]
    win.start_ns = start + int(args.settle_s * 1e9)
    win.end_ns = win.start_ns + int(args.seconds * 1e9)
    await _sleep_until(win.start_ns)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    await _sleep_until(win.end_ns)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    await _sleep_until(win.end_ns + int(args.tail_s * 1e9))  # the window's last replies
    for t in tasks:
        t.cancel()
    errors = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out = summary(win.latencies, win.lags, win.failures, cpu)
    if errors:
        out["error"] = f"{len(errors)} streams failed: {errors[0].exception()!r}"[:200]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.reference")
    p.add_argument("--transport", choices=list(CLIENTS), required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--streams", type=int, default=240)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--settle-s", type=float, default=1.0)
    p.add_argument("--tail-s", type=float, default=2.0)
    p.add_argument("--interval-ms", type=float, default=100.0)
    p.add_argument("--frame-bytes", type=int, default=3200)
    p.add_argument(
        "--timers",
        choices=("auto", "select", "epoll"),
        default="auto",
        help="select: microsecond waits (fewer than ~500 streams); epoll: asyncio's default, "
        "whole milliseconds; auto: select when it fits",
    )
    return p


def _loop_factory(args: argparse.Namespace) -> Any:
    """An event loop whose timers wake on time. asyncio's default selector (epoll) rounds
    every wait up to a whole millisecond, so a paced client built on it sends 0.3-0.6 ms late
    at the median, and that lateness would count against the reference. ``select()`` waits in
    microseconds; it takes descriptors below 1024, which a few hundred streams stay under."""
    fds_needed = args.streams * 2 + 64  # a socket per stream, gRPC's extra ones, the rest
    if args.timers == "select" or (args.timers == "auto" and fds_needed < 1000):
        return lambda: asyncio.SelectorEventLoop(selectors.SelectSelector())
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with asyncio.Runner(loop_factory=_loop_factory(args)) as runner:
        print(json.dumps(runner.run(main_async(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
