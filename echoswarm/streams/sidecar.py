"""The gRPC driver process: ``python -m echoswarm.streams.sidecar --fd N``.

Why a process of its own: grpcio's gevent mode hands every message through gevent's thread pool
and added 8-30 ms to every gRPC message we measured (docs/ARCHITECTURE.md has the figures and
the alternatives that were measured). Here gRPC runs as its authors intend — ``grpc.aio`` on a
plain asyncio loop, no gevent anywhere in this process — and the Locust process keeps what it is
good at: the users' life cycle (spawn, stop, rebalance, web UI, ``--processes``, master/worker).

One driver process per load-generating Locust process (started by
``echoswarm.users.grpc_driver`` when Locust starts, after any ``--processes`` fork; it dies
with its parent, even a SIGKILLed one, through ``echoswarm.pdeath``). They talk over a Unix
socket pair, one msgpack value per message (:mod:`echoswarm.streams.protocol`):

* the Locust side asks: open a channel, run a call (one user task), stop a call, close a channel;
* this side answers each with ``opened``/``ended`` and streams the samples back in batches —
  at most every :data:`~echoswarm.streams.protocol.FLUSH_S` or
  :data:`~echoswarm.streams.protocol.BATCH` samples, and always before the ``opened``/``ended``
  they belong to — so the gevent side wakes once per batch, not once per message.

Every clock reading and every latency is taken here, next to the sockets, through
:mod:`echoswarm.measure` (``CLOCK_MONOTONIC`` is one clock for every process of the host).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
from typing import Any

import grpc
import msgpack

from echoswarm.measure import Sample
from echoswarm.pdeath import die_with_parent
from echoswarm.streams import failures
from echoswarm.streams import protocol as p
from echoswarm.streams.grpc_calls import KINDS, CallSpec, Stop, open_channel, own_cancel
from echoswarm.streams.pacer import AsyncPacer
from protos import echo_pb2_grpc


class Sidecar:
    def __init__(self, loop: asyncio.AbstractEventLoop, writer: asyncio.StreamWriter) -> None:
        self.loop = loop
        self.writer = writer
        self.pacer = AsyncPacer(loop)
        self.channels: dict[int, tuple[grpc.aio.Channel, Any]] = {}
        self.close_when_open: set[int] = set()
        self.calls: dict[int, Stop] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._out: list[list[Any]] = []
        self._flush_at: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- samples out
    def sink_for(self, rid: int) -> Any:
        out = self._out

        def sink(s: Sample) -> None:
            out.append(p.sample_row(rid, s))
            if len(out) >= p.BATCH:
                self.flush()
            elif self._flush_at is None:
                self._flush_at = self.loop.call_later(p.FLUSH_S, self.flush)

        return sink

    def flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._out:
            self._write(msgpack.packb([p.SAMPLES, self._out]))
            self._out.clear()

    def reply(self, msg: list[Any]) -> None:
        self.flush()  # the samples of a call always precede its end
        self._write(msgpack.packb(msg))

    def _write(self, data: bytes) -> None:
        if not self.writer.is_closing():  # the Locust side is gone: nobody to tell
            self.writer.write(data)

    # ---------------------------------------------------------------- requests in
    def handle(self, msg: list[Any]) -> None:
        op = msg[0]
        if op == p.OPEN:
            _, rid, target, timeout_s, user_id, conn_id, name = msg
            self._spawn(self._open(rid, target, timeout_s, user_id, conn_id, name))
        elif op == p.CALL:
            _, rid, chan_id, spec = msg
            self._spawn(self._call(rid, chan_id, CallSpec.from_wire(spec)))
        elif op == p.STOP:
            stop = self.calls.get(msg[1])
            if stop is not None:
                stop.set()
        elif op == p.CLOSE:
            self._spawn(self._close(msg[1]))

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _open(
        self, rid: int, target: str, timeout_s: float, user_id: int, conn_id: int, name: str
    ) -> None:
        channel, error = await open_channel(
            target, timeout_s, self.sink_for(rid), user_id=user_id, conn_id=conn_id, name=name
        )
        if channel is not None:
            if rid in self.close_when_open:
                self.close_when_open.discard(rid)
                await channel.close(None)
            else:
                self.channels[rid] = (channel, echo_pb2_grpc.EchoStub(channel))
        self.reply([p.OPENED, rid, error])

    async def _call(self, rid: int, chan_id: int, spec: CallSpec) -> None:
        stop = self.calls[rid] = Stop()
        error: str | None
        try:
            entry = self.channels.get(chan_id)
            if entry is None:
                error = "no such channel (closed)"
            else:
                run = KINDS[spec.kind]
                error = await run(entry[1], spec, self.sink_for(rid), self.pacer, stop)
        except asyncio.CancelledError:
            if own_cancel():
                raise
            error = failures.CANCELLED
        except Exception as exc:  # a bug must end the call with a reason, not hang the user
            error = f"driver error: {type(exc).__name__}: {exc}"
        finally:
            self.calls.pop(rid, None)
        self.reply([p.ENDED, rid, error])

    async def _close(self, chan_id: int) -> None:
        entry = self.channels.pop(chan_id, None)
        if entry is None:
            self.close_when_open.add(chan_id)
            return
        with contextlib.suppress(Exception):
            await entry[0].close(None)

    async def shutdown(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        for stop in list(self.calls.values()):
            stop.set()
        for task in list(self.tasks):
            task.cancel()
        for channel, _ in list(self.channels.values()):
            with contextlib.suppress(Exception):
                await channel.close(None)
        self.channels.clear()
        self.pacer.close()


async def serve(fd: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    side = Sidecar(loop, writer)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    side.reply([p.HELLO, os.getpid()])
    await writer.drain()
    gc.freeze()  # what exists now (modules, the loop) never needs collecting

    async def read() -> None:
        unpacker = msgpack.Unpacker(use_list=True, raw=False)
        while True:
            data = await reader.read(1 << 16)
            if not data:  # the Locust process is gone or closed us
                return
            unpacker.feed(data)
            for msg in unpacker:
                if msg[0] == p.QUIT:
                    return
                side.handle(msg)

    try:
        await asyncio.wait(
            [asyncio.ensure_future(read()), asyncio.ensure_future(stop.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        await side.shutdown()
        with contextlib.suppress(Exception):
            side.flush()
            writer.close()


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed and not switched off (``ECHOSWARM_GRPC_LOOP=asyncio``)."""
    if os.environ.get("ECHOSWARM_GRPC_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            pass
    return asyncio.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m echoswarm.streams.sidecar")
    parser.add_argument("--fd", type=int, required=True, help="the control socket's descriptor")
    args = parser.parse_args(argv)
    die_with_parent()
    loop = new_loop()
    try:
        loop.run_until_complete(serve(args.fd))
    except KeyboardInterrupt:
        return 130
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
