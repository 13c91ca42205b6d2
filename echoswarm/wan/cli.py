"""``python -m echoswarm wan`` — the WAN emulator's command line (see :mod:`echoswarm.wan`).

    python -m echoswarm wan --listen 127.0.0.1:7001 --to 127.0.0.1:7777 --rtt 20ms \\
        [--jitter 2ms] [--rate 100mbit] [--listen ... --to ...]

Prints ``LISTENING wan HOST:PORT`` per ``--listen`` (in order, flushed) once every address is
bound; SIGTERM/SIGINT stop it (open connections are reset) with exit 0; a bad flag or an address
that cannot be bound is one line on stderr and exit 2. It asks for ``--nice`` (-10): the emulated
path must not wait behind the load generators for CPU (without the privilege it runs as is).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn, TypeVar

from echoswarm.wan.reactor import TIMERS
from echoswarm.wan.relay import Relay, RelayError
from echoswarm.wan.spec import (
    DEFAULT_QUEUE_BYTES,
    NS_PER_S,
    Address,
    WanSpec,
    WanSpecError,
    format_address,
    parse_address,
    parse_duration,
    parse_rate,
)

PROG = "python -m echoswarm wan"
EXIT_USAGE = 2
DEFAULT_NICE = -10
T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def _checked(fn: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type=`` that reports a WanSpecError as the flag's one-line message."""

    def check(text: str) -> T:
        try:
            return fn(text)
        except WanSpecError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    check.__name__ = fn.__name__
    return check


def _listen(text: str) -> Address:
    return parse_address(text, allow_port_zero=True)


def _target(text: str) -> Address:
    return parse_address(text, allow_port_zero=False)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise WanSpecError(f"{text!r} is not an integer") from None


def _niceness(text: str) -> int:
    value = _int(text)
    if not -20 <= value <= 19:
        raise WanSpecError(f"niceness {value} is outside -20..19")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="A user-space WAN emulator: a TCP relay that adds a round trip, jitter "
        "(never reordering) and a bandwidth limit in front of any TCP server.",
    )
    p.add_argument(
        "--listen",
        type=_checked(_listen),
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="address clients connect to (port 0: the OS chooses); repeat for more pairs",
    )
    p.add_argument(
        "--to",
        type=_checked(_target),
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="the server behind it; one --to per --listen, in the same order",
    )
    p.add_argument(
        "--rtt",
        type=_checked(lambda t: parse_duration(t, "rtt")),
        required=True,
        help="round trip added (half each way), e.g. 20ms",
    )
    p.add_argument(
        "--jitter",
        type=_checked(lambda t: parse_duration(t, "jitter")),
        default=0,
        help="extra delay per chunk and direction, uniform in [0, jitter]; never reorders",
    )
    p.add_argument(
        "--rate",
        type=_checked(parse_rate),
        default=None,
        help="bandwidth per direction, shared by all connections, e.g. 100mbit (default: none)",
    )
    p.add_argument(
        "--queue-bytes",
        type=_checked(_int),
        default=DEFAULT_QUEUE_BYTES,
        help=f"most bytes queued per connection and direction (default {DEFAULT_QUEUE_BYTES})",
    )
    p.add_argument("--seed", type=_checked(_int), default=None, help="jitter random seed")
    p.add_argument(
        "--connect-timeout",
        type=_checked(lambda t: parse_duration(t, "connect timeout")),
        default=10 * NS_PER_S,
        help="give up an upstream connect after this long, resetting the client (10s)",
    )
    p.add_argument(
        "--timer",
        choices=TIMERS,
        default="timerfd",
        help="timerfd (ns precision, default) or poll (epoll's ms timeout; for comparison)",
    )
    p.add_argument(
        "--stats",
        type=Path,
        default=None,
        metavar="FILE",
        help="on exit, write what it relayed and how late its releases were (JSON) to FILE",
    )
    p.add_argument(
        "--nice",
        type=_checked(_niceness),
        default=DEFAULT_NICE,
        help=f"scheduling niceness to ask for (default {DEFAULT_NICE}: the path must not queue "
        "behind the load generators for CPU; needs root or CAP_SYS_NICE, else left as is)",
    )
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if len(args.listen) != len(args.to):
        _usage(f"{len(args.listen)} --listen but {len(args.to)} --to (give them in pairs)")
    if args.stats is not None and not args.stats.parent.is_dir():
        _usage(f"--stats: no directory {str(args.stats.parent)!r}")
    if not hasattr(select, "epoll"):
        _usage("the WAN emulator needs Linux (epoll, timerfd)")
    try:
        spec = WanSpec(
            rtt_ns=args.rtt,
            jitter_ns=args.jitter,
            rate_bps=args.rate,
            queue_bytes=args.queue_bytes,
            seed=args.seed,
        )
        if args.connect_timeout <= 0:
            raise WanSpecError("--connect-timeout must be > 0")
        relay = Relay(
            spec,
            list(zip(args.listen, args.to, strict=True)),
            timer=args.timer,
            connect_timeout_ns=args.connect_timeout,
        )
        bound = relay.bind()
    except (WanSpecError, RelayError) as exc:
        _usage(str(exc.strerror if isinstance(exc, RelayError) else exc))
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from echoswarm.listening import announce, raise_nofile_limit
    from echoswarm.streams.timerfd import reduce_timer_slack

    raise_nofile_limit()
    reduce_timer_slack()
    nice_note = raise_priority(args.nice)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        relay.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for host, port in bound:
        announce("wan", host, port)
    logging.getLogger("echoswarm.wan").info(
        "relaying %s on %s (timer %s, %s)",
        ", ".join(f"{format_address(a)} -> {format_address(b)}" for a, b in relay.pairs),
        spec.contract(),
        relay.timer,
        nice_note,
    )
    relay.run()
    stats = relay.stats()
    logging.getLogger("echoswarm.wan").info("stopped: %s", stats)
    if args.stats is not None:
        _write_json(args.stats, stats)
    return 0


def _write_json(path: Path, data: dict[str, object]) -> None:
    """Write ``data`` whole or not at all (a temp file renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)
    except OSError as exc:
        sys.stderr.write(f"{PROG}: cannot write {path}: {exc.strerror}\n")


def raise_priority(niceness: int) -> str:
    """Ask for ``niceness`` (lower = more CPU under contention); what happened, for the log.

    On a machine saturated by the load generators an ordinary-priority relay waits in the run
    queue, and that wait would show up as network latency that no real path has."""
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if niceness != current:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
        return f"nice {niceness}"
    except OSError as exc:
        return f"nice unchanged ({exc.strerror})"


def _usage(message: str) -> NoReturn:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    raise SystemExit(EXIT_USAGE)


if __name__ == "__main__":
    sys.exit(main())
