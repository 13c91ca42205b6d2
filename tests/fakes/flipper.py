"""A misbehaving echo server for the user tests: it echoes, but corrupts every K-th message.

    python -m tests.fakes.flipper tcp|ws|grpc [--port 0] [--every K] [--offset N]
        [--frame-bytes F]

Every K-th message (the 1st, the K+1-th, ...) comes back with the byte at ``--offset`` of the
frame inverted (for gRPC: of the Frame's payload). ``--ping-every`` makes the WebSocket server
interleave pings, which the client must answer. TCP counts messages in ``--frame-bytes``
chunks of the byte stream. Prints ``LISTENING <kind> 127.0.0.1:<port>`` like the real servers.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from concurrent import futures
from typing import Any

from servers.common import announce


def _flip(data: bytes, offset: int) -> bytes:
    if offset >= len(data):
        return data
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


async def _tcp(args: argparse.Namespace) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        try:
            while True:
                data = await reader.readexactly(args.frame_bytes)
                if n % args.every == 0:
                    data = _flip(data, args.offset)
                n += 1
                writer.write(data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", args.port)
    announce("tcp", "127.0.0.1", server.sockets[0].getsockname()[1])
    await _until_signal()
    server.close()


async def _ws(args: argparse.Namespace) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    async def handle(ws: ServerConnection) -> None:
        n = 0
        try:
            async for message in ws:
                if isinstance(message, bytes) and n % args.every == 0:
                    message = _flip(message, args.offset)
                if args.ping_every and n % args.ping_every == 0:
                    # the client must answer with a pong, or this connection is dropped
                    pong = await ws.ping(b"are you there")
                    await asyncio.wait_for(pong, 2.0)
                n += 1
                await ws.send(message)
        except (ConnectionClosed, TimeoutError):
            pass

    async with serve(handle, "127.0.0.1", args.port) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        announce("ws", "127.0.0.1", port)
        await _until_signal()


async def _until_signal() -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()


def _grpc(args: argparse.Namespace) -> None:
    import threading

    import grpc

    from protos import echo_pb2_grpc

    class Flipping(echo_pb2_grpc.EchoServicer):
        def Bidi(self, request_iterator: Any, context: Any) -> Any:
            for n, frame in enumerate(request_iterator):
                if n % args.every == 0:
                    frame.payload = _flip(frame.payload, args.offset)
                yield frame

        def Unary(self, request: Any, context: Any) -> Any:
            request.payload = _flip(request.payload, args.offset)
            return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    echo_pb2_grpc.add_EchoServicer_to_server(Flipping(), server)
    port = server.add_insecure_port("127.0.0.1:0" if not args.port else f"127.0.0.1:{args.port}")
    server.start()
    announce("grpc", "127.0.0.1", port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop(grace=None)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.flipper")
    parser.add_argument("kind", choices=["tcp", "ws", "grpc"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--offset", type=int, default=100)
    parser.add_argument("--frame-bytes", type=int, default=3200)
    parser.add_argument(
        "--ping-every", type=int, default=0, help="ws: a ping before every K-th echo"
    )
    args = parser.parse_args()
    if args.kind == "grpc":
        _grpc(args)
    else:
        asyncio.run(_tcp(args) if args.kind == "tcp" else _ws(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
