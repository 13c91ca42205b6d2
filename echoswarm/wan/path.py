"""When bytes arrive at the far end of the emulated path — the timing model, with no I/O.

A chunk of bytes read from one side at ``now`` is, in order:

1. serialized onto that direction's link (:class:`Link`, shared by every connection of the
   relay, first come first served): it starts when the link is free and takes
   ``bytes × 8 / rate`` — so bytes leave at most at ``rate``, and a busy link queues;
2. carried for the propagation delay (half the round trip) plus a jitter drawn uniformly from
   ``[0, jitter]``;
3. held back, if need be, until the chunk before it on the same connection and direction has
   been delivered (:class:`Lane`): TCP bytes are never reordered, so delivery times are
   non-decreasing.

Everything is integer nanoseconds on the monotonic clock. The relay (:mod:`.relay`) asks
:meth:`Lane.due` for each chunk and writes the chunk out at that time.
"""

from __future__ import annotations

import random

from echoswarm.wan.spec import NS_PER_S, WanSpec

# Bytes per release when a rate is set: about 1 ms of the link's time (so the receiver sees a
# smooth stream, not one burst per 64 KiB read), at least one Ethernet-sized segment.
MIN_PIECE_BYTES = 1448
MAX_PIECE_BYTES = 65536


class Link:
    """One direction of the access link: serialization at ``rate_bps`` (None = infinitely fast)."""

    __slots__ = ("rate_bps", "free_at_ns")

    def __init__(self, rate_bps: int | None) -> None:
        self.rate_bps = rate_bps
        self.free_at_ns = 0

    def transmit(self, now_ns: int, nbytes: int) -> int:
        """Put ``nbytes`` on the link at ``now_ns``; return when the last bit has left."""
        rate = self.rate_bps
        if rate is None:
            return now_ns
        start = self.free_at_ns if self.free_at_ns > now_ns else now_ns
        end = start + (nbytes * 8 * NS_PER_S + rate - 1) // rate
        self.free_at_ns = end
        return end

    def piece_bytes(self) -> int:
        """How many bytes to schedule as one release (about 1 ms of link time)."""
        if self.rate_bps is None:
            return MAX_PIECE_BYTES
        return max(MIN_PIECE_BYTES, min(MAX_PIECE_BYTES, self.rate_bps // 8 // 1000))


class Path:
    """The two directions of one emulated path: links, propagation delay, jitter."""

    def __init__(self, spec: WanSpec) -> None:
        self.spec = spec
        self.up = Link(spec.rate_bps)  # towards the servers
        self.down = Link(spec.rate_bps)  # towards the clients
        self.one_way_up_ns = spec.one_way_ns
        self.one_way_down_ns = spec.rtt_ns - spec.one_way_ns
        self.jitter_ns = spec.jitter_ns
        self._random = random.Random(spec.seed).random

    def jitter(self) -> int:
        return int(self._random() * (self.jitter_ns + 1)) if self.jitter_ns else 0

    def lane(self, upstream: bool) -> Lane:
        """A new per-connection lane in one direction."""
        if upstream:
            return Lane(self, self.up, self.one_way_up_ns)
        return Lane(self, self.down, self.one_way_down_ns)


class Lane:
    """One direction of one connection: the link, the delay, and the order of its bytes."""

    __slots__ = ("path", "link", "one_way_ns", "last_due_ns", "not_before_ns")

    def __init__(self, path: Path, link: Link, one_way_ns: int) -> None:
        self.path = path
        self.link = link
        self.one_way_ns = one_way_ns
        self.last_due_ns = 0
        # Bytes are taken as sent no earlier than this (the client's emulated handshake end).
        self.not_before_ns = 0

    def due(self, now_ns: int, nbytes: int) -> int:
        """When ``nbytes`` read at ``now_ns`` reach the far side (non-decreasing per lane)."""
        if now_ns < self.not_before_ns:
            now_ns = self.not_before_ns
        t = self.link.transmit(now_ns, nbytes) + self.one_way_ns
        if self.path.jitter_ns:
            t += self.path.jitter()
        if t < self.last_due_ns:
            t = self.last_due_ns
        self.last_due_ns = t
        return t

    def one_way(self, now_ns: int) -> int:
        """When a control event (a SYN, a connect failure) sent at ``now_ns`` arrives.

        It takes the propagation delay and jitter but no link time, and is not ordered behind
        data (it is not on this lane's byte stream)."""
        return now_ns + self.one_way_ns + (self.path.jitter() if self.path.jitter_ns else 0)
