"""What an emulated path is: round trip, jitter, bandwidth — parsed from flags or the contract.

``WanSpec`` is the one description of the path, shared by the command line
(``--rtt 20ms --jitter 2ms --rate 100mbit``) and by the orchestrator's contract string
(``python -m echoswarm run ... --wan "rtt=20ms,jitter=2ms,rate=100mbit"``, DESIGN.md). Values are
plain decimals with a unit — ``20ms``, ``0.5s``, ``250us``, ``100mbit``, ``1gbit``, ``10kbit`` —
so ``nan``, ``inf``, exponents and negatives cannot get in; each bound is checked and every
mistake is one line (``WanSpecError``).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

NS_PER_S = 1_000_000_000
MAX_RTT_NS = 60 * NS_PER_S  # beyond a minute nothing useful is emulated, and TCP gives up
MAX_JITTER_NS = 10 * NS_PER_S
MIN_RATE_BPS = 1_000  # 1 kbit/s: below that a 3200-byte frame takes over 25 s
MAX_RATE_BPS = 400_000_000_000  # 400 gbit/s: far above what one Python process can move
MIN_QUEUE_BYTES = 16 * 1024
MAX_QUEUE_BYTES = 1024 * 1024 * 1024
DEFAULT_QUEUE_BYTES = 1024 * 1024

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": NS_PER_S}
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}


class WanSpecError(ValueError):
    """A bad path description; the message is one line for the user."""


def parse_duration(text: str, what: str = "duration") -> int:
    """``"20ms"`` → 20_000_000 ns. Units: ns, us (µs), ms, s; a unit is required."""
    m = re.fullmatch(_NUMBER + r"\s*([a-zµ]+)", text.strip().lower())
    if not m or m.group(2) not in _DURATION_UNITS:
        raise WanSpecError(
            f"bad {what} {text!r}: use a non-negative number with a unit, e.g. 20ms, 0.5s, 250us"
        )
    return round(float(m.group(1)) * _DURATION_UNITS[m.group(2)])


def parse_rate(text: str) -> int:
    """``"100mbit"`` → 100_000_000 bit/s. Units: bit, kbit, mbit, gbit (powers of 1000)."""
    m = re.fullmatch(_NUMBER + r"\s*([a-z]+)", text.strip().lower())
    if not m or m.group(2) not in _RATE_UNITS:
        hint = " (bits, not bytes: 100mbit)" if m and m.group(2).endswith(("bps", "b")) else ""
        raise WanSpecError(
            f"bad rate {text!r}: use a number with bit, kbit, mbit or gbit, e.g. 100mbit{hint}"
        )
    return round(float(m.group(1)) * _RATE_UNITS[m.group(2)])


def format_duration(ns: int) -> str:
    """The shortest exact spelling of ``ns`` that :func:`parse_duration` reads back."""
    for unit, scale in (("s", NS_PER_S), ("ms", 1_000_000), ("us", 1_000)):
        if ns % scale == 0:
            return f"{ns // scale}{unit}"
    return f"{ns}ns"


def format_rate(bps: int) -> str:
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps % scale == 0:
            return f"{bps // scale}{unit}"
    return f"{bps}bit"


@dataclass(frozen=True)
class WanSpec:
    """One emulated path between the load generators and the servers.

    * ``rtt_ns`` — the round trip's floor, half in each direction (propagation delay);
    * ``jitter_ns`` — each direction adds a uniform random delay in ``[0, jitter]`` per chunk
      of bytes (queueing on top of propagation: the round trip stays ≥ rtt, its mean is
      ``rtt + jitter``); bytes are never reordered, so a chunk waits for the one before it;
    * ``rate_bps`` — per direction, shared by every connection of one relay process, like one
      access link: bytes leave at most at this rate (None = unlimited);
    * ``queue_bytes`` — the most bytes one connection may have queued in one direction; beyond
      it the relay stops reading that side and TCP flow control slows the sender;
    * ``seed`` — the jitter's random seed (None = a fresh one).
    """

    rtt_ns: int
    jitter_ns: int = 0
    rate_bps: int | None = None
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.rtt_ns <= MAX_RTT_NS:
            raise WanSpecError(
                f"rtt {format_duration(self.rtt_ns)} is outside 0..{format_duration(MAX_RTT_NS)}"
            )
        if not 0 <= self.jitter_ns <= MAX_JITTER_NS:
            raise WanSpecError(
                f"jitter {format_duration(self.jitter_ns)} is outside "
                f"0..{format_duration(MAX_JITTER_NS)}"
            )
        if self.rate_bps is not None and not MIN_RATE_BPS <= self.rate_bps <= MAX_RATE_BPS:
            raise WanSpecError(
                f"rate {format_rate(self.rate_bps)} is outside "
                f"{format_rate(MIN_RATE_BPS)}..{format_rate(MAX_RATE_BPS)}"
            )
        if not MIN_QUEUE_BYTES <= self.queue_bytes <= MAX_QUEUE_BYTES:
            raise WanSpecError(
                f"queue of {self.queue_bytes} bytes is outside {MIN_QUEUE_BYTES}..{MAX_QUEUE_BYTES}"
            )

    @property
    def one_way_ns(self) -> int:
        """The propagation delay of one direction (the first half gets the odd nanosecond)."""
        return self.rtt_ns - self.rtt_ns // 2

    @classmethod
    def parse(cls, text: str) -> WanSpec:
        """The DESIGN.md contract string: ``rtt=20ms[,jitter=2ms][,rate=100mbit]``."""
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or not key or not value.strip():
                raise WanSpecError(
                    f"bad WAN spec {text!r}: expected rtt=20ms[,jitter=2ms][,rate=100mbit]"
                )
            if key not in ("rtt", "jitter", "rate"):
                raise WanSpecError(f"bad WAN spec {text!r}: unknown key {key!r}")
            if key in fields:
                raise WanSpecError(f"bad WAN spec {text!r}: {key} given twice")
            fields[key] = value.strip()
        if "rtt" not in fields:
            raise WanSpecError(f"bad WAN spec {text!r}: rtt is required (e.g. rtt=20ms)")
        return cls(
            rtt_ns=parse_duration(fields["rtt"], "rtt"),
            jitter_ns=parse_duration(fields.get("jitter", "0ms"), "jitter"),
            rate_bps=parse_rate(fields["rate"]) if "rate" in fields else None,
        )

    def contract(self) -> str:
        """The contract string that :meth:`parse` reads back (queue and seed are not in it)."""
        parts = [f"rtt={format_duration(self.rtt_ns)}"]
        if self.jitter_ns:
            parts.append(f"jitter={format_duration(self.jitter_ns)}")
        if self.rate_bps is not None:
            parts.append(f"rate={format_rate(self.rate_bps)}")
        return ",".join(parts)

    def flags(self) -> list[str]:
        """The relay's command-line flags for this path."""
        argv = ["--rtt", format_duration(self.rtt_ns)]
        if self.jitter_ns:
            argv += ["--jitter", format_duration(self.jitter_ns)]
        if self.rate_bps is not None:
            argv += ["--rate", format_rate(self.rate_bps)]
        if self.queue_bytes != DEFAULT_QUEUE_BYTES:
            argv += ["--queue-bytes", str(self.queue_bytes)]
        if self.seed is not None:
            argv += ["--seed", str(self.seed)]
        return argv


Address = tuple[str, int]


def parse_address(text: str, *, allow_port_zero: bool) -> Address:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not m:
        raise WanSpecError(f"bad address {text!r}: expected HOST:PORT (or [IPv6]:PORT)")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise WanSpecError(f"bad address {text!r}: port {port} is outside {low}..65535")
    return host, port


def format_address(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve(addr: Address, passive: bool = False) -> tuple[int, tuple[object, ...]]:
    """(address family, sockaddr) for ``addr``; a name that does not resolve is a usage error."""
    host, port = addr
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE if passive else 0
        )
    except socket.gaierror as exc:
        raise WanSpecError(f"cannot resolve {format_address(addr)}: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, tuple(sockaddr)
