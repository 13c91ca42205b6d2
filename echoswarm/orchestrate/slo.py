"""Service-level objectives like k6 thresholds: ``--slo "grpc:bidi msg:p99<20ms"``.

Syntax: ``TRANSPORT:NAME:METRIC OP VALUE[UNIT]``

* TRANSPORT and NAME are request_type and name of a results row; ``*``/``?`` globs allowed
  (``*:*msg`` = every per-message row). NAME may contain spaces.
* METRIC: ``pNN`` / ``pNN.N`` (any percentile from the merged HDR histogram: p50, p99, p99.9;
  ``p999`` means p99.9), ``mean``, ``max``, ``min``, ``error_rate``, ``failures``, ``count``,
  ``rps``.
* OP: ``<``, ``<=``, ``>``, ``>=``.
* VALUE: a number; latency metrics take ``us``, ``ms`` (default) or ``s``; ``error_rate`` takes
  ``%`` or a fraction.

Every row the patterns match must satisfy the objective; an objective that matches no row fails
(a typo must not pass silently). Parsing is strict: a bad expression is a usage error (exit 2)
before anything starts.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

LATENCY_METRICS = ("mean", "max", "min")
PLAIN_METRICS = ("failures", "count", "rps")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_UNITS_MS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0, "": 1.0}
_EXPR = re.compile(
    r"^(?P<metric>[a-z_0-9.]+)\s*(?P<op><=|>=|<|>)\s*"
    r"(?P<value>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>[a-zµ%]*)$"
)


class SLOError(ValueError):
    """An SLO expression that cannot be parsed (a usage error)."""


@dataclass(frozen=True)
class SLO:
    """One parsed objective. ``threshold`` is in ms for latency metrics, a fraction for
    error_rate, and plain units otherwise."""

    text: str
    transport: str
    name: str
    metric: str
    op: str
    threshold: float

    @property
    def percentile(self) -> float | None:
        return _percentile(self.metric)

    def matches(self, request_type: str, name: str) -> bool:
        return fnmatch.fnmatchcase(request_type, self.transport) and fnmatch.fnmatchcase(
            name, self.name
        )

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one SLO on one row (or on no row at all)."""

    slo: SLO
    request_type: str
    name: str
    value: float | None
    passed: bool

    def describe(self) -> str:
        row = f"{self.request_type}:{self.name}" if self.request_type else "(no matching row)"
        shown = "—" if self.value is None else _fmt(self.slo, self.value)
        return f"{'PASS' if self.passed else 'FAIL'}  {self.slo.text:<36} {row:<28} {shown}"


def parse(text: str) -> SLO:
    """Parse one expression; raises :class:`SLOError` with a one-line reason."""
    parts = text.split(":")
    if len(parts) != 3:
        raise SLOError(
            f"bad SLO {text!r}: expected TRANSPORT:NAME:METRIC<OP>VALUE, "
            'e.g. "grpc:bidi msg:p99<20ms"'
        )
    transport, name, expr = (p.strip() for p in parts)
    if not transport or not name:
        raise SLOError(f"bad SLO {text!r}: transport and name must not be empty (use *)")
    m = _EXPR.match(expr.strip())
    if not m:
        raise SLOError(
            f"bad SLO {text!r}: cannot read {expr!r} as METRIC<OP>VALUE (ops: < <= > >=)"
        )
    metric, op, unit = m["metric"], m["op"], m["unit"]
    value = float(m["value"])
    if metric == "p999":
        metric = "p99.9"
    if _percentile(metric) is not None or metric in LATENCY_METRICS:
        if unit not in _UNITS_MS:
            raise SLOError(f"bad SLO {text!r}: latency unit must be us, ms or s, not {unit!r}")
        threshold = value * _UNITS_MS[unit]
    elif metric == "error_rate":
        if unit not in ("", "%"):
            raise SLOError(f"bad SLO {text!r}: error_rate takes % or a fraction, not {unit!r}")
        threshold = value / 100 if unit == "%" else value
        if not 0 <= threshold <= 1:
            raise SLOError(f"bad SLO {text!r}: error_rate must be within 0..100%")
    elif metric in PLAIN_METRICS:
        if unit:
            raise SLOError(f"bad SLO {text!r}: {metric} takes no unit")
        threshold = value
    else:
        raise SLOError(
            f"bad SLO {text!r}: unknown metric {metric!r} "
            "(pNN, mean, max, min, error_rate, failures, count, rps)"
        )
    return SLO(text, transport, name, metric, op, threshold)


def parse_all(texts: Iterable[str]) -> list[SLO]:
    return [parse(t) for t in texts]


RowValues = Mapping[str, float]
"""What evaluation needs of a row: count, failures, rps, mean_ms, min_ms, max_ms."""


def evaluate(
    slos: Iterable[SLO],
    rows: Mapping[tuple[str, str], RowValues],
    percentile_ms: Callable[[str, str, float], float | None],
) -> list[Verdict]:
    """Judge every SLO against every row it matches.

    ``rows`` maps (request_type, name) to the row's plain figures (summary.csv columns);
    ``percentile_ms(request_type, name, p)`` reads a percentile from the merged HDR histogram.
    """
    verdicts: list[Verdict] = []
    for slo in slos:
        matched = [key for key in rows if slo.matches(*key)]
        if not matched:
            verdicts.append(Verdict(slo, "", "", None, False))
            continue
        for request_type, name in sorted(matched):
            value = _value(slo, rows[(request_type, name)], request_type, name, percentile_ms)
            passed = value is not None and slo.holds(value)
            verdicts.append(Verdict(slo, request_type, name, value, passed))
    return verdicts


def _value(
    slo: SLO,
    row: RowValues,
    request_type: str,
    name: str,
    percentile_ms: Callable[[str, str, float], float | None],
) -> float | None:
    p = slo.percentile
    if p is not None:
        return percentile_ms(request_type, name, p)
    if slo.metric in LATENCY_METRICS:
        return float(row[f"{slo.metric}_ms"])
    if slo.metric == "error_rate":
        count = float(row["count"])
        return float(row["failures"]) / count if count else 0.0
    return float(row[slo.metric])


def _percentile(metric: str) -> float | None:
    m = re.fullmatch(r"p(\d{1,2}(?:\.\d+)?|100)", metric)
    if not m:
        return None
    p = float(m.group(1))
    return p if 0 < p <= 100 else None


def _fmt(slo: SLO, value: float) -> str:
    if slo.metric == "error_rate":
        return f"{value * 100:.3g}%"
    if slo.percentile is not None or slo.metric in LATENCY_METRICS:
        return f"{value:.3f} ms"
    return f"{value:g}"
