"""``--model uvloop``: the ``asyncio`` model's protocol server on uvloop's libuv event loop."""

from __future__ import annotations

import socket

from servers.common import UsageError
from servers.tcp import asyncio_model
from servers.tcp.discipline import Config, Ready, Stop


def serve(listener: socket.socket, cfg: Config, stop: Stop, ready: Ready) -> None:
    try:
        import uvloop
    except ImportError:
        raise UsageError("--model uvloop needs the uvloop package (pip install uvloop)") from None
    asyncio_model.serve_with(listener, cfg, stop, ready, loop_factory=uvloop.new_event_loop)
