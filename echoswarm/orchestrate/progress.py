"""The progress line of a local run, fed by the master's ``live.json``.

On a terminal it is one line rewritten in place; otherwise (CI, a pipe) a compact line every
10 seconds. It shows elapsed/total, users, workers, messages/s, failures and the live p99 of the
per-message rows from the merged HDR data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

PERIOD_NOT_TTY_S = 10.0


def read_live(path: Path) -> dict[str, Any] | None:
    """The latest snapshot, or None while there is none (or it is mid-write)."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def format_line(snap: dict[str, Any] | None, elapsed_s: float, total_s: float | None) -> str:
    if snap and isinstance(snap.get("elapsed_s"), int | float):
        elapsed_s = float(snap["elapsed_s"])  # the test's own clock, from the master
    clock = f"{elapsed_s:5.0f}s" + (f"/{total_s:.0f}s" if total_s else "")
    if not snap:
        return f"[{clock}] starting: waiting for workers and the first report…"
    rows = snap.get("rows") or []
    rps = sum(float(r.get("rps") or 0) for r in rows)
    failures = sum(int(r.get("failures") or 0) for r in rows)
    count = sum(int(r.get("count") or 0) for r in rows)
    parts = [
        f"[{clock}]",
        f"users {snap.get('users', '?')}",
        f"workers {snap.get('workers', '?')}",
        f"{rps:,.0f} req/s",
        f"{count:,} done",
        f"failures {failures:,}",
    ]
    p99s = [
        f"{r['request_type']}:{r['name']} {float(r['p99_ms']):.1f}ms"
        for r in rows
        if str(r.get("name", "")).endswith("msg") and r.get("p99_ms") is not None
    ]
    if p99s:
        parts.append("p99 " + ", ".join(p99s))
    return " · ".join(parts)


class ProgressLine:
    def __init__(self, out: TextIO, total_s: float | None) -> None:
        self.out = out
        self.total_s = total_s
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self._last_print = -PERIOD_NOT_TTY_S
        self._width = 0
        self._shown = False

    def update(self, snap: dict[str, Any] | None, elapsed_s: float) -> None:
        text = format_line(snap, elapsed_s, self.total_s)
        if self.tty:
            pad = max(0, self._width - len(text))
            self.out.write("\r" + text + " " * pad)
            self._width = len(text)
            self._shown = True
            self.out.flush()
        elif elapsed_s - self._last_print >= PERIOD_NOT_TTY_S:
            self.out.write(text + "\n")
            self.out.flush()
            self._last_print = elapsed_s

    def done(self) -> None:
        if self.tty and self._shown:
            self.out.write("\n")
            self.out.flush()
            self._shown = False
