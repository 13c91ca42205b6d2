"""``python -m echoswarm run --wan rtt=20ms[,jitter=2ms][,rate=100mbit]``: the servers behind one
user-space WAN relay (:mod:`echoswarm.wan`).

One relay process serves every declared server (one ``--listen/--to`` pair each, one shared
emulated link, as one access line would be); the users are given the relay's addresses instead
of the servers'. The relay is supervised like a server (if it dies the run fails) and stopped
after the workers, when it writes its own statistics (``wan_stats.json``: connections, bytes,
how late its releases ran). ``run.json`` gets ``wan``: the spec, each pair and those stats.

What the path adds, per row: every message ``rtt`` (+ up to ``jitter`` each way); gRPC's and
WebSocket's ``connect`` at least 2 × rtt (the TCP handshake's emulated round trip, then HTTP/2's
or the upgrade's); raw TCP's ``connect`` nothing — a client's ``connect()`` is answered by the
relay's kernel at once and no user-space program can delay a SYN-ACK — so its first message
carries the handshake's round trip instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoswarm import wan
from echoswarm.orchestrate.supervise import Child, ChildError, Supervisor

STATS_FILE = "wan_stats.json"
CONNECT_NOTE = (
    "raw TCP's connect row does not include the emulated path (a user-space relay cannot delay "
    "the kernel's handshake); its first message carries the handshake's round trip"
)


class WanUsageError(ValueError):
    """A bad ``--wan`` spec (one line)."""


def parse(text: str) -> wan.WanSpec:
    try:
        return wan.WanSpec.parse(text)
    except wan.WanSpecError as exc:
        raise WanUsageError(f"--wan: {exc}") from None


@dataclass
class WanPath:
    """The relay of one run and the pairs it serves."""

    spec: wan.WanSpec
    child: Child
    stats_path: Path
    pairs: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        stats: Any = None
        try:
            stats = json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            stats = None  # the relay died before writing them
        return {
            "spec": self.spec.contract(),
            "rtt_ms": self.spec.rtt_ns / 1e6,
            "jitter_ms": self.spec.jitter_ns / 1e6,
            "rate_bps": self.spec.rate_bps,
            "relay": "echoswarm.wan (user-space TCP relay)",
            "relay_pid": self.child.pid,
            "pairs": self.pairs,
            "stats_file": self.stats_path.name,
            "stats": stats,
            "note": CONNECT_NOTE,
        }


def start(
    sup: Supervisor,
    spec: wan.WanSpec,
    servers: list[tuple[str, str, int]],
    results: Path,
    timeout: float = 30.0,
) -> tuple[WanPath, list[tuple[str, int]]]:
    """Start one relay in front of ``servers`` (label, host, port); returns the path and the
    relay's address for each server, in order."""
    stats = results / STATS_FILE
    pairs = [("127.0.0.1:0", wan.format_address((host, port))) for _label, host, port in servers]
    child = sup.start("wan-relay", "server", wan.relay_argv(spec, pairs, stats=stats))
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = child.stdout_path.read_text(errors="replace")
            addresses = wan.read_listening(text, len(pairs))
        except ValueError as exc:
            raise ChildError(f"wan-relay: {exc}") from None
        if addresses is not None:
            break
        rc = child.poll()
        if rc is not None:
            raise ChildError(
                f"wan-relay exited with code {rc} before listening: {child.last_lines()}"
            )
        if time.monotonic() > deadline:
            raise ChildError(f"wan-relay did not listen within {timeout:g}s")
        time.sleep(0.02)  # polling a file the child writes; the deadline bounds it
    path = WanPath(spec, child, stats)
    for (label, host, port), addr in zip(servers, addresses, strict=True):
        path.pairs.append(
            {
                "server": label,
                "listen": wan.format_address(addr),
                "target": wan.format_address((host, port)),
            }
        )
    return path, addresses
