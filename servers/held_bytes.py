"""The byte bound on replies held back by ``--delay-ms`` (one counter per connection or stream).

A delayed reply keeps its request in memory until it is due. Counting held messages would let a
client that pipelines large messages park hundreds of MiB per connection (1,024 × 1 MiB), so
the servers count bytes: the reader takes the next message only while fewer than ``limit`` bytes
are held, and the writer gives a message's bytes back once its reply has been handed to the
transport. A client that never reads its replies therefore meets the transport's own flow
control (TCP, HTTP/2) once about ``limit`` bytes — plus the one message being read — are
held. The delay still applies to each reply from its request's arrival; only arrivals are
postponed while the buffer is full, which a client sees as added latency, as it should.

``AsyncHeldBytes`` is for one event loop (ws, grpc aio); ``HeldBytes`` for threads (grpc sync).
"""

from __future__ import annotations

import asyncio
import threading


class AsyncHeldBytes:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._room = asyncio.Event()
        self._room.set()

    async def wait_for_room(self) -> None:
        """Return once fewer than ``limit`` bytes are held."""
        await self._room.wait()

    def hold(self, n: int) -> None:
        self.held += n
        if self.held >= self.limit:
            self._room.clear()

    def release(self, n: int) -> None:
        self.held -= n
        if self.held < self.limit:
            self._room.set()


class HeldBytes:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._changed = threading.Condition()

    def wait_for_room(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until fewer than ``limit`` bytes are held; True if so."""
        with self._changed:
            return self._changed.wait_for(lambda: self.held < self.limit, timeout)

    def hold(self, n: int) -> None:
        with self._changed:
            self.held += n

    def release(self, n: int) -> None:
        with self._changed:
            self.held -= n
            self._changed.notify_all()
