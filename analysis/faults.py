"""The report's "Faults and gaps": what went wrong around the measurement, and what the numbers
above it therefore mean.

From ``run.json`` and the per-second timeline:

* workers lost or missing — whose heartbeats stopped (and came back), with times;
* worker processes the orchestrator saw die, and their replacements;
* gaps in the load (``run.json`` ``gaps``: from a lost worker's last report to its
  replacement's first, with the estimated samples lost) — :func:`gap_table`;
* reconnect storms — seconds whose connects spike after the spawn (:func:`reconnect_storms`);
* clock offsets of the workers to the master, and how their timelines were aligned;
* the network path (``--wan``): the emulated round trip, the relay's own statistics.

Every function returns data (DataFrames, lines); the report renders them.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis.load import Run

STORM_MIN = 5  # connects in one second, at least, to call it a storm…
STORM_FACTOR = 3.0  # …and this many times the run's median connects per second
SPAWN_GRACE_S = 1.0  # after the spawn's planned end (users / spawn rate)


def _rel(run: Run, epoch_s: Any) -> str:
    """``+12.3 s`` after the run's start (or the UTC time when the start is unknown)."""
    if not isinstance(epoch_s, int | float):
        return "-"
    if run.start_s is None:
        return pd.Timestamp(epoch_s, unit="s", tz="UTC").strftime("%H:%M:%S.%f")[:-3]
    return f"+{epoch_s - run.start_s:.1f} s"


def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if isinstance(v, int | float) and not math.isnan(v) else "-"


def gap_table(run: Run) -> pd.DataFrame:
    """One row per gap (``run.json`` ``gaps``), times relative to the run's start."""
    rows = []
    for g in run.run.get("gaps") or []:
        rows.append(
            {
                "worker": g.get("index"),
                "last report": _rel(run, g.get("last_report_utc")),
                "detected lost": _rel(run, g.get("detected_lost_utc")),
                "replacement": _rel(run, g.get("replacement_connected_utc"))
                if g.get("replacement")
                else "none",
                "its first report": _rel(run, g.get("replacement_first_report_utc")),
                "gap_s": g.get("gap_s"),
                "samples delivered": g.get("samples_delivered"),
                "expected/s": g.get("expected_per_s"),
                "samples lost (est.)": g.get("samples_lost_estimate"),
            }
        )
    return pd.DataFrame(rows)


def worker_lines(run: Run) -> list[str]:
    """Workers lost or missing (the master's view), and worker processes that died (the
    orchestrator's) with their replacements."""
    lines = []
    for w in run.run.get("workers") or []:
        missing = w.get("missing_since_utc")
        if not (w.get("lost") or missing):
            continue
        what = f"worker {w.get('index')} ({w.get('id')})"
        parts = [f"last report {_rel(run, w.get('last_report_utc'))}"]
        if missing:
            parts.append(f"heartbeats missing from {_rel(run, missing)}")
        if w.get("healed_utc"):
            parts.append(f"back at {_rel(run, w.get('healed_utc'))}")
        if w.get("lost_reason"):
            parts.append(f"lost: {w['lost_reason']}")
        parts.append(f"{w.get('samples', 0):,} samples delivered")
        lines.append(f"{what}: " + ", ".join(parts))
    orch = run.run.get("orchestrator") or {}
    pool = orch.get("workers") or {}
    for lost in pool.get("lost") or []:
        seen = lost.get("exit_seen_utc")
        line = (
            f"process {lost.get('child')} (pid {lost.get('pid')}) exited with code "
            f"{lost.get('exit_code')} at {_rel(run, seen)}"
        )
        line += (
            f"; replaced by {lost['replaced_by']}" if lost.get("replaced_by") else "; not replaced"
        )
        lines.append(line)
    return lines


def reconnect_storms(run: Run) -> list[str]:
    """Seconds after the spawn whose connects (rows ending in ``connect``) reach
    ``max(STORM_MIN, STORM_FACTOR × median + 1)`` — users reconnecting at once, e.g. after a
    server restart or a rebalance — one line per storm (consecutive seconds merged)."""
    tl = run.timeline
    if tl.empty:
        return []
    conn = tl[tl["name"].astype(str).str.endswith("connect")]
    if conn.empty:
        return []
    opts = run.run.get("locust_options") or {}
    users, rate = opts.get("num_users"), opts.get("spawn_rate")
    spawn_s = users / rate if isinstance(users, int | float) and rate else 0.0
    out = []
    t0 = float(tl["t_s"].min())  # every t_s is a whole second + the same fraction
    span = int(round(float(tl["t_s"].max()) - t0)) + 1
    for (rt, name), g in conn.groupby(["request_type", "name"], sort=True):
        per_s = g.groupby((g["t_s"] - t0).round().astype(int))["count"].sum()
        full = per_s.reindex(range(span), fill_value=0)
        full.index = [t0 + k for k in full.index]  # mid-second, from the run's start
        threshold = max(STORM_MIN, STORM_FACTOR * float(full.median()) + 1)
        spikes = full[(full >= threshold) & (full.index > spawn_s + SPAWN_GRACE_S)]
        for start, end, total, peak in _runs(spikes):
            out.append(
                f"{rt} {name}: {int(total):,} connects from +{start - 0.5:.0f} s to "
                f"+{end + 0.5:.0f} s (peak {int(peak):,}/s; median {full.median():.0f}/s)"
            )
    return out


def _runs(spikes: pd.Series) -> list[tuple[float, float, float, float]]:
    out: list[tuple[float, float, float, float]] = []
    for t, n in spikes.items():
        t = float(t)  # type: ignore[arg-type]
        if out and t - out[-1][1] <= 1.0:
            s, _e, total, peak = out[-1]
            out[-1] = (s, t, total + n, max(peak, n))
        else:
            out.append((t, t, float(n), float(n)))
    return out


def clock_lines(run: Run) -> list[str]:
    """Each worker's clock offset to the master, its error bound and what was shifted."""
    lines = []
    for w in run.run.get("workers") or []:
        if w.get("clock_offset_ms") is None:
            continue
        offset = _f(w["clock_offset_ms"], "{:+.2f}")
        bound = _f(w.get("clock_offset_bound_ms"), "{:.2f}")
        line = (
            f"worker {w.get('index')} ({w.get('host', '?')}): clock offset {offset} ms "
            f"± {bound} ms ({w.get('clock_samples', 0)} round trips)"
        )
        if w.get("clock_shift_s") or w.get("clock_event_shift_ms"):
            line += (
                f"; its timeline shifted by {w.get('clock_shift_s', 0)} s (per-second data) and "
                f"{_f(w.get('clock_event_shift_ms'))} ms (events)"
            )
        if w.get("clock_warning"):
            line += " — WARNING: more than 50 ms; check the host's time sync"
        lines.append(line)
    if lines:
        lines.append(
            "Offsets only move timelines; every latency is a difference of one host's monotonic "
            "clock and does not depend on them."
        )
    return lines


def wan_lines(run: Run) -> list[str]:
    """The emulated network path (``--wan``), or that there was none."""
    w = run.run.get("wan")
    if not isinstance(w, dict):
        return []
    pairs = ", ".join(f"{p.get('server')} {p.get('listen')}→{p.get('target')}" for p in w["pairs"])
    lines = [
        f"WAN path {w.get('spec')} through one user-space relay (pid {w.get('relay_pid')}): {pairs}"
    ]
    stats = w.get("stats")
    if isinstance(stats, dict):
        lines.append(
            f"relay: {stats.get('connections', '?')} connections, "
            f"{_f(stats.get('bytes_up'), '{:,.0f}')} bytes up, "
            f"{_f(stats.get('bytes_down'), '{:,.0f}')} down; its releases ran late by "
            f"p50 {_f(stats.get('late_p50_us_max'))} µs, p99 {_f(stats.get('late_p99_us_max'))} µs"
        )
    if w.get("note"):
        lines.append(str(w["note"]))
    return lines


def fault_lines(run: Run) -> list[str]:
    """Everything of the section but the gap table, in order; "none" lines when clean."""
    lines = worker_lines(run)
    if not lines:
        lines.append("no worker was lost or missing")
    gaps = run.run.get("gaps") or []
    if gaps:
        lost = sum(int(g.get("samples_lost_estimate") or 0) for g in gaps)
        lines.append(
            f"{len(gaps)} gap(s) in the load, ~{lost:,} samples lost (estimated: "
            f"{gaps[0].get('estimate_method', '')})"
        )
    storms = reconnect_storms(run)
    lines += storms or ["no reconnect storm (connect spikes after the spawn)"]
    lines += clock_lines(run)
    lines += wan_lines(run) or ["network path: direct (no --wan)"]
    return lines
