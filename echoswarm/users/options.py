"""Locust custom arguments for every echoswarm user, registered once (import this module).

They are added through ``locust.events.init_command_line_parser``, so they appear in
``locust --help``, in the web UI's start form (where they can be changed per run) and are sent
by the master to its workers. Users read them with :func:`of`, which also works for a library
``Environment`` whose ``parsed_options`` is ``None`` or lacks them (defaults fill the gaps).

``--transports`` is applied once, at Locust's ``init`` event: user classes whose ``transport``
attribute is not listed are removed from ``environment.user_classes`` and the listed ones get
the given weights (``grpc:2,ws:1``). On the master this decides what is dispatched; a worker
keeps every class (the master only sends classes it kept). Changing it in the web UI form has
no effect after start-up; Locust's own ``--class-picker`` covers that case.

Frame size: for ws and tcp ``--frame-bytes`` is the whole frame on the wire, the 32-byte header
included (DESIGN.md). For gRPC the ``Frame.payload`` carries ``frame_bytes - 32`` bytes, so the
serialized message (payload plus seq/timestamp fields, about 30 bytes) is about the same size.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import locust
from locust import events
from locust.exception import StopUser

from echoswarm.argtypes import non_negative_float, positive_float
from echoswarm.wire import HEADER_SIZE

TRANSPORTS = ("grpc", "ws", "tcp")
MODES = ("paced", "pingpong")
PHASES = ("spread", "aligned")
REQUEST_EVENTS = ("batched", "per-message")


def _frame_bytes(text: str) -> int:
    value = _int_at_least(text, HEADER_SIZE)
    return value


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
    return value


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def parse_transports(text: str) -> dict[str, int]:
    """``"grpc,ws:2"`` → ``{"grpc": 1, "ws": 2}``; raises ValueError with a one-line reason."""
    out: dict[str, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, weight = part.partition(":")
        name = name.strip().lower()
        if name not in TRANSPORTS:
            raise ValueError(f"unknown transport {name!r} (choose from {', '.join(TRANSPORTS)})")
        try:
            w = int(weight) if weight else 1
        except ValueError:
            raise ValueError(f"weight of {name!r} must be an integer, got {weight!r}") from None
        if w < 1:
            raise ValueError(f"weight of {name!r} must be >= 1")
        out[name] = w
    if not out:
        raise ValueError("no transport selected")
    return out


def _transports_arg(text: str) -> str:
    try:
        parse_transports(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_arguments(parser: Any) -> None:
    """Add echoswarm's user options to a Locust (or plain argparse) parser."""
    # Straight on the parser, not in an argument group: Locust lists in its web UI only the
    # arguments that went through its own parser's add_argument.
    group = parser
    group.add_argument(
        "--grpc-target", default="127.0.0.1:50051", help="gRPC echo server HOST:PORT"
    )
    group.add_argument(
        "--ws-url", default="ws://127.0.0.1:8765/echo", help="WebSocket echo server URL"
    )
    group.add_argument("--tcp-target", default="127.0.0.1:7777", help="TCP echo server HOST:PORT")
    group.add_argument(
        "--frame-bytes",
        type=_frame_bytes,
        default=3200,
        help="frame size in bytes, 32-byte header included (gRPC: payload = this - 32)",
    )
    group.add_argument(
        "--interval-ms",
        type=non_negative_float,
        default=100.0,
        help="paced mode: one message per interval per stream (0 = as fast as possible)",
    )
    group.add_argument(
        "--mode",
        choices=MODES,
        default="paced",
        help="paced: sender on a schedule, latency from the intended send time; "
        "pingpong: closed loop, next message after the reply",
    )
    group.add_argument(
        "--request-events",
        choices=REQUEST_EVENTS,
        default="batched",
        help="batched: samples reach echoswarm's results and Locust's stats in batches (cheap); "
        "per-message: one Locust request event per message, for your own listeners",
    )
    group.add_argument(
        "--phases",
        choices=PHASES,
        default="spread",
        help="paced streams: spread = each stream's first message at its own phase within the "
        "interval (streams Locust starts together do not send in lockstep); aligned = at once",
    )
    group.add_argument(
        "--transports",
        type=_transports_arg,
        default="grpc,ws,tcp",
        help="which transports' users run, with optional weights: grpc:2,ws,tcp (start-up only)",
    )
    group.add_argument(
        "--reply-timeout-s",
        type=positive_float,
        default=5.0,
        help="a reply later than this is a failure (timeout); also the connect timeout",
    )
    group.add_argument(
        "--stream-seconds",
        type=non_negative_float,
        default=0.0,
        help="length of one stream/session before it is closed and reopened (0 = until stop)",
    )
    group.add_argument(
        "--stream-messages",
        type=_non_negative_int,
        default=0,
        help="messages per stream/session before it is closed and reopened (0 = no limit)",
    )
    group.add_argument(
        "--connections-per-user",
        type=_non_negative_int,
        default=0,
        help="short-lived connections each user makes, then stops (0 = until the test stops)",
    )
    group.add_argument(
        "--round-trips",
        type=_int_at_least_one,
        default=50,
        help="round trips per short-lived connection",
    )


def _int_at_least_one(text: str) -> int:
    return _int_at_least(text, 1)


@events.init_command_line_parser.add_listener
def _on_parser(parser: Any, **_kw: Any) -> None:
    add_arguments(parser)


_DEFAULTS: argparse.Namespace | None = None


def defaults() -> argparse.Namespace:
    """Every option at its default (for library use and tests)."""
    global _DEFAULTS
    if _DEFAULTS is None:
        parser = argparse.ArgumentParser(add_help=False)
        add_arguments(parser)
        _DEFAULTS = parser.parse_args([])
    return argparse.Namespace(**vars(_DEFAULTS))


class OptionError(ValueError):
    """An option value that is not acceptable (one line, names the option)."""


def _mode(text: str) -> str:
    return _choice(text, MODES)


def _choice(text: str, allowed: tuple[str, ...]) -> str:
    if text not in allowed:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(allowed)}")
    return text


# Values typed into the web UI's form skip argparse (Locust converts them to the default's
# type only), so :func:`of` runs them through the same checks.
_CHECKS: dict[str, Any] = {
    "frame_bytes": _frame_bytes,
    "interval_ms": non_negative_float,
    "mode": _mode,
    "phases": lambda text: _choice(text, PHASES),
    "request_events": lambda text: _choice(text, REQUEST_EVENTS),
    "transports": _transports_arg,
    "reply_timeout_s": positive_float,
    "stream_seconds": non_negative_float,
    "stream_messages": _non_negative_int,
    "connections_per_user": _non_negative_int,
    "round_trips": lambda text: _int_at_least(text, 1),
}


def of(environment: Any) -> argparse.Namespace:
    """The effective options of ``environment``: its parsed options over the defaults.

    Raises :class:`OptionError` for a value that fails its check.
    """
    merged = defaults()
    parsed = getattr(environment, "parsed_options", None)
    if parsed is not None:
        for key, value in vars(parsed).items():
            if key in vars(merged) and value is not None:
                setattr(merged, key, value)
    for key, check in _CHECKS.items():
        value = getattr(merged, key)
        try:
            setattr(merged, key, check(str(value)))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise OptionError(f"--{key.replace('_', '-')} {value}: {exc}") from None
    return merged


_reported: set[str] = set()


def user_options(environment: Any) -> argparse.Namespace:
    """:func:`of` for a user's ``on_start``: a bad value is logged once per process and stops
    the user (Locust's ``StopUser``) instead of raising into Locust."""
    try:
        return of(environment)
    except OptionError as exc:
        text = str(exc)
        if text not in _reported:
            _reported.add(text)
            logging.getLogger("echoswarm.users").error("bad option %s", text)
        raise StopUser() from None


def parse_options(argv: list[str]) -> argparse.Namespace:
    """Parse just echoswarm's options from ``argv`` (tests, library use)."""
    parser = argparse.ArgumentParser(prog="echoswarm users")
    add_arguments(parser)
    return parser.parse_args(argv)


def select_user_classes(user_classes: list[Any], transports: str) -> list[Any]:
    """The classes whose ``transport`` is selected, with their ``weight`` set from the spec.

    Classes without a ``transport`` attribute (not ours) are kept as they are.
    """
    chosen = parse_transports(transports)
    kept = []
    for cls in user_classes:
        transport = getattr(cls, "transport", None)
        if transport is None:
            kept.append(cls)
        elif transport in chosen:
            if not getattr(cls, "fixed_count", 0):
                cls.weight = chosen[transport] * getattr(cls, "base_weight", 1)
            kept.append(cls)
    return kept


@events.init.add_listener
def _on_init(environment: Any, **_kw: Any) -> None:
    parsed = getattr(environment, "parsed_options", None)
    transports = getattr(parsed, "transports", None)
    if not transports or not environment.user_classes:
        return
    if isinstance(environment.runner, locust.runners.WorkerRunner):
        return  # the master decides what runs; a worker must know every class it may be sent
    kept = select_user_classes(list(environment.user_classes), transports)
    if not kept:
        have = sorted({getattr(c, "transport", "?") for c in environment.user_classes})
        sys.stderr.write(
            f"echoswarm: error: --transports {transports} selects none of this locustfile's "
            f"users (it has: {', '.join(have)})\n"
        )
        raise SystemExit(2)
    environment.user_classes[:] = kept
