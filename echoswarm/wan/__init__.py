"""A user-space WAN emulator: a TCP relay that puts a real round trip between clients and servers.

Everything distributed in echoswarm can run on one machine, where the network path is a
loopback with a round trip of tens of microseconds; the users it is built for run across
machines (a laptop in Japan to EC2 in Tokyo: 12–16 ms). Linux's ``netem`` would add that delay
in the kernel, but it is not always there (and needs root); this relay adds it in user space,
in front of any TCP server (raw TCP echo, WebSocket, gRPC over HTTP/2):

    python -m echoswarm wan --listen 127.0.0.1:0 --to 127.0.0.1:7777 --rtt 20ms \\
        --jitter 2ms --rate 100mbit

* half the round trip each way, a jitter that never reorders bytes, a per-direction bandwidth
  limit with serialization delay, the handshake's round trip, half-closes and resets carried
  through, bounded memory per connection (:mod:`.conn`, :mod:`.relay`, :mod:`.path`);
* releases on time to the microsecond: a timerfd in the relay's own epoll loop, because epoll's
  millisecond timeouts (asyncio's and uvloop's timers) would add up to 1 ms per hop
  (:mod:`.clock`, :mod:`.reactor`; figures in ``bench/README.md``); each chunk's delay counts
  from its kernel receive timestamp, so the relay's own wake-up latency is not added; and the
  process asks for ``nice -10`` so it does not wait behind the load generators for a CPU;
* no gevent, no Locust: it is a process of its own.

The orchestrator's API::

    from echoswarm import wan

    spec = wan.WanSpec.parse("rtt=20ms,jitter=2ms,rate=100mbit")   # the --wan contract string
    argv = wan.relay_argv(spec, [("127.0.0.1:0", "127.0.0.1:50051"), ("127.0.0.1:0", ...)])
    # start argv like a server; it prints one LISTENING line per pair, in order:
    addrs = wan.read_listening(stdout_text, 2)   # [(host, port), ...] or None until all are there

or in-process (blocking; ``stop()`` from another thread or a signal handler)::

    relay = wan.Relay(spec, [(("127.0.0.1", 0), ("127.0.0.1", 50051))])
    addrs = relay.bind()
    relay.run()
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from echoswarm.listening import LISTENING_RE
from echoswarm.wan.relay import Relay, RelayError
from echoswarm.wan.spec import (
    Address,
    WanSpec,
    WanSpecError,
    format_address,
    parse_address,
)

__all__ = [
    "Address",
    "Relay",
    "RelayError",
    "WanSpec",
    "WanSpecError",
    "format_address",
    "parse_address",
    "read_listening",
    "relay_argv",
]

PairText = tuple[str | Address, str | Address]


def _address(value: str | Address, *, listen: bool) -> Address:
    if isinstance(value, str):
        return parse_address(value, allow_port_zero=listen)
    return value


def relay_argv(
    spec: WanSpec,
    pairs: Sequence[PairText],
    *,
    python: str = sys.executable,
    timer: str | None = None,
    stats: Path | None = None,
) -> list[str]:
    """The command line of one relay process serving every ``(listen, target)`` pair on the
    path ``spec`` (one shared link). Addresses are ``"host:port"`` strings or tuples. With
    ``stats``, the relay writes what it did and how late its releases were there on exit."""
    if not pairs:
        raise ValueError("at least one (listen, target) pair is needed")
    argv = [python, "-m", "echoswarm.wan"]
    for listen, target in pairs:
        argv += ["--listen", format_address(_address(listen, listen=True))]
        argv += ["--to", format_address(_address(target, listen=False))]
    argv += spec.flags()
    if timer is not None:
        argv += ["--timer", timer]
    if stats is not None:
        argv += ["--stats", str(stats)]
    return argv


def read_listening(stdout_text: str, count: int) -> list[Address] | None:
    """The addresses from a relay's first ``count`` ``LISTENING wan`` lines, or None while
    fewer have been printed. Raises ValueError on a line that is not one."""
    lines = stdout_text.split("\n")
    if len(lines) <= count:  # the last element is an unfinished line (or "")
        return None
    out: list[Address] = []
    for line in lines[:count]:
        m = LISTENING_RE.match(line.strip())
        if not m or m.group(1) != "wan":
            raise ValueError(f"expected 'LISTENING wan HOST:PORT', got {line!r}")
        out.append((m.group(2), int(m.group(3))))
    return out
