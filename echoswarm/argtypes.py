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
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
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
        value = _float(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is outside {lo:g}..{hi:g}{what}")
        return value

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
