"""argparse ``type=`` validators shared by every command line (servers, Locust options, the
orchestrator, sweeps, the benchmark): each turns a bad value into a one-line reason."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):  # nan, inf: never a sane setting
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def port_number(text: str) -> int:
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0..65535")
    return value


def non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def float_between(lo: float, hi: float, what: str = "") -> Callable[[str], float]:
    """A validator for ``lo <= value <= hi`` (``what`` names the unit in the message)."""

    def check(text: str) -> float:
        try:
            value = _float(text)
        except argparse.ArgumentTypeError as exc:  # name the range a bad value missed
            raise argparse.ArgumentTypeError(f"{exc} in {lo:g}..{hi:g}{what}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is outside {lo:g}..{hi:g}{what}")
        return value

    return check


def int_between(lo: int, hi: int, what: str = "") -> Callable[[str], int]:
    """A validator for a whole number ``lo <= value <= hi`` (``what`` names the unit)."""

    def check(text: str) -> int:
        value = _int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is outside {lo}..{hi}{what}")
        return value

    return check


def positive_float_upto(hi: float, what: str = "") -> Callable[[str], float]:
    """A validator for ``0 < value <= hi``."""

    def check(text: str) -> float:
        value = _float(text)
        if not 0 < value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is outside (0, {hi:g}]{what}")
        return value

    return check


def int_list_between(lo: int, hi: int) -> Callable[[str], list[int]]:
    """A validator for ``"50,150,1000"`` → ``[50, 150, 1000]``, each within ``lo..hi``
    (duplicates dropped, order kept)."""
    one = int_between(lo, hi)

    def check(text: str) -> list[int]:
        out: list[int] = []
        for part in text.split(","):
            try:
                value = one(part.strip())
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"{exc} (in {text!r})") from None
            if value not in out:
                out.append(value)
        return out

    return check


def positive_int_list(text: str) -> list[int]:
    """``"50,150,1000"`` → ``[50, 150, 1000]`` (positive, duplicates dropped, order kept)."""
    out: list[int] = []
    for part in text.split(","):
        try:
            value = positive_int(part.strip())
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (in {text!r})") from None
        if value not in out:
            out.append(value)
    return out


unit_fraction = float_between(0.0, 1.0)
"""A fraction within 0..1 (e.g. ``--events-sample-rate``)."""
up_to_an_hour = float_between(0.0, 3600.0, " s")
"""Seconds within 0..3600 (e.g. ``--results-drain-s``)."""

# Bounds of the load flags (run, demo, sweep, infra): far beyond any sane test on the machines
# this runs on, small enough that a typo (an extra zero or three) is refused before anything
# starts.
MAX_USERS = 1_000_000
MAX_SPAWN_RATE = 100_000.0
MAX_LOCAL_WORKERS = 256
MAX_RUN_SECONDS = 24 * 3600
users = int_between(1, MAX_USERS)
"""Concurrent users, 1..MAX_USERS."""
spawn_rate = positive_float_upto(MAX_SPAWN_RATE, " users/s")
"""Users started per second, (0, MAX_SPAWN_RATE]."""
local_workers = int_between(1, MAX_LOCAL_WORKERS)
"""Locust worker processes on one machine, 1..MAX_LOCAL_WORKERS."""
tcp_port = int_between(1, 65535)
"""A port to listen on that cannot be chosen by the OS (1..65535)."""
