"""gRPC echo server: the four RPC kinds of ``protos/echo.proto``, health and reflection.

``python -m servers grpc [--impl aio|sync] [--threads N] [--delay-ms D] ...``

- ``Unary`` echoes the Frame; ``Bidi`` echoes every Frame as it arrives (one reply per frame,
  fields unchanged); ``ClientStream`` answers a StreamSummary (frames, payload bytes, first and
  last seq); ``ServerStream`` pushes ``count`` frames of ``payload_bytes`` on a schedule: frame i
  is due at start + i * interval (no drift from cumulative sleeps); ``intended_send_ns`` is that
  due time and ``sent_ns`` the moment it was handed to gRPC, both on this server's monotonic
  clock.
- ``--delay-ms D`` delays every reply by D after its request arrived. Pipelined Bidi frames are
  not serialised by it: reply i goes at arrival_i + D, in order. For ServerStream the whole
  schedule starts D after the request. A Bidi stream holds at most ``--delay-buffer-bytes``
  (4 MiB) of delayed frames; beyond that the server stops reading it until replies go out, so
  HTTP/2 flow control slows the client instead of the server's memory growing.
- ServerStream memory is budgeted: a ~10-byte request can ask for endless 64 MiB frames, so all
  ServerStream calls together may hold at most ``--stream-memory-bytes`` (256 MiB), each charged
  3 × its payload_bytes (the frame, its encoding, gRPC's copy) while it runs; a call that does
  not fit is refused at once with RESOURCE_EXHAUSTED. Payloads are built per call, never cached.
- A client that cancels or resets a call is routine: at most a DEBUG line, never an ERROR with
  a traceback (grpc.aio's own log of the failed write is filtered, see ``grpc_shared``).
- ``--impl aio`` (default) runs on ``grpc.aio``; ``--impl sync`` on a thread pool of
  ``--threads`` workers (each open stream holds one thread, hence the large default). As in
  any grpcio thread-pool server, calls beyond that many wait for a free thread: a load test
  sees that as latency, which is what the sync/aio comparison is meant to show.
- A connection that has not completed its HTTP/2 handshake within ``--handshake-timeout-s``
  (gRPC's own default, 120 s) is dropped, so silent clients do not pile up.
- Health (``grpc.health.v1``: SERVING for "" and the Echo service) and reflection are served.
- SO_REUSEPORT is switched off, so a second server on a busy port fails (exit 2) instead of
  silently sharing it. SIGTERM/SIGINT stop the server with a ``--grace-s`` grace period: calls
  in progress may finish within it, those still open after it are cancelled (the client sees a
  status, the process exits 0); once no Echo call is left the server stops at once.

This module is the command line; ``grpc_aio`` and ``grpc_sync`` are the two implementations,
``grpc_shared`` what they have in common.
"""

from __future__ import annotations

import argparse
import asyncio

from servers import grpc_aio, grpc_sync
from servers.common import (
    MAX_MESSAGE_BYTES,
    MAX_TIMEOUT_S,
    MiB,
    add_common_arguments,
    add_delay_buffer_argument,
    add_grace_argument,
    bytes_between,
    cap_malloc_arenas,
    int_between,
    raise_nofile_limit,
    return_large_frees,
    seconds_between,
)
from servers.grpc_shared import DEFAULT_STREAM_MEMORY, STREAM_CHARGE, Config

DEFAULT_PORT = 50051
DEFAULT_THREADS = 512
MAX_THREADS = 10_000
DEFAULT_MAX_MESSAGE = 64 * MiB
MAX_STREAM_MEMORY = 64 * 1024 * MiB


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, DEFAULT_PORT)
    parser.add_argument(
        "--impl", choices=["aio", "sync"], default="aio", help="grpc.aio (default) or thread pool"
    )
    parser.add_argument(
        "--threads",
        type=int_between(1, MAX_THREADS),
        default=DEFAULT_THREADS,
        help=f"sync impl: worker threads, 1..{MAX_THREADS}; each open stream holds one "
        f"(default {DEFAULT_THREADS})",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=bytes_between(1, MAX_MESSAGE_BYTES),
        default=DEFAULT_MAX_MESSAGE,
        help="largest message sent or received, 1..256 MiB (default 64 MiB)",
    )
    parser.add_argument(
        "--stream-memory-bytes",
        type=bytes_between(MiB, MAX_STREAM_MEMORY),
        default=DEFAULT_STREAM_MEMORY,
        help=f"ServerStream calls together hold at most this much, each charged {STREAM_CHARGE} "
        "× its payload_bytes; a call that does not fit gets RESOURCE_EXHAUSTED "
        "(1 MiB..64 GiB; default 256 MiB)",
    )
    parser.add_argument(
        "--handshake-timeout-s",
        type=seconds_between(0.001, MAX_TIMEOUT_S),
        default=120.0,
        help="drop connections that have not completed the HTTP/2 handshake by then "
        f"(0.001..{MAX_TIMEOUT_S:.0f} s; default 120)",
    )
    add_delay_buffer_argument(parser, "Bidi stream")
    add_grace_argument(parser, "open calls to finish")


def run(args: argparse.Namespace) -> int:
    raise_nofile_limit()
    cap_malloc_arenas()
    return_large_frees()
    config = Config(
        host=args.host,
        port=args.port,
        delay_ns=int(args.delay_ms * 1_000_000),
        max_message_bytes=args.max_message_bytes,
        grace_s=args.grace_s,
        handshake_timeout_s=args.handshake_timeout_s,
        stream_memory_bytes=args.stream_memory_bytes,
        delay_buffer_bytes=args.delay_buffer_bytes,
    )
    if args.impl == "aio":
        asyncio.run(grpc_aio.serve(config))
    else:
        grpc_sync.serve(config, args.threads)
    return 0
