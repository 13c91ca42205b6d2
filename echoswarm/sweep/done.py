"""When a sweep cell's load is done, judged on its live ``summary.csv`` rows, and how a row of
a given phase is found whatever prefix the scenario gives its names. No pandas: the sweep engine
checks this every half second while the cell runs; the tables (:mod:`analysis.sweeps`) use the
same phase lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Rows = dict[str, dict[str, Any]]


def count(row: dict[str, Any] | None, column: str = "count") -> int:
    return int(row.get(column) or 0) if row else 0


def phase(rows: Rows, name: str, prefix: str = "") -> tuple[str, dict[str, Any] | None]:
    """(row name, row) of a phase (``connect``, ``msg``, …) whatever prefix the scenario uses;
    with ``prefix`` only that variant's row (``"serial "`` → ``serial msg``)."""
    if prefix:
        return prefix + name, rows.get(prefix + name)
    for row_name, row in rows.items():
        if row_name == name or row_name.endswith(" " + name):
            return row_name, row
    return name, None


def _keyed(rows: list[dict[str, Any]]) -> Rows:
    return {str(r["name"]): r for r in rows}


def all_connections(expected: int, prefix: str = "") -> Callable[[list[dict[str, Any]]], bool]:
    """Done when ``expected`` connects were attempted and every opened one was closed."""

    def done(rows: list[dict[str, Any]]) -> bool:
        by = _keyed(rows)
        connect, session = phase(by, "connect", prefix)[1], phase(by, "session", prefix)[1]
        attempts = count(connect)
        opened = attempts - count(connect, "failures")
        # A failed connect has no session row, so compare sessions with the opened ones.
        return attempts >= expected and count(session) >= opened

    return done


def all_messages(expected: int, prefix: str = "") -> Callable[[list[dict[str, Any]]], bool]:
    """Done when ``expected`` messages were settled (answered, failed or timed out)."""

    def done(rows: list[dict[str, Any]]) -> bool:
        return count(phase(_keyed(rows), "msg", prefix)[1]) >= expected

    return done
