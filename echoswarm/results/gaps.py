"""Gaps in a run's load: a worker lost mid-run, until its replacement carried load again.

Sans-Locust: :func:`gap_records` is fed what the master saw (each worker's first and last report,
when it connected, when its heartbeats stopped and whether they came back) and the run's total
samples per second of completion (every row, every worker: ``second_counts``), and returns one
record per lost worker for ``run.json`` ``gaps``.

When a worker dies, the samples it completed after its last report die with it, and its users
are gone until the master notices (Locust marks it missing after about 3–4 s of silent
heartbeats) and moves them (``--enable-rebalancing``) onto the other workers and the replacement.
What that cost is *estimated* from the per-second totals, because the lost samples were never
seen: ``expected_per_s`` is the median of the run's completions in the whole seconds just before
the lost worker's last report (a steady load), and ``samples_lost_estimate`` sums
``max(0, expected - actual)`` over the seconds from that report until one report interval after
the load was back (``gap_s`` after the last report: the later of the loss being noticed and the
replacement's first report; the end of the run without a replacement). ``recovered_utc`` is
the first second after the loss was noticed that ran at 95 % of the expected rate again. A loss
during the ramp-up has no steady baseline: the estimate is then left out (``None``) and
``estimate_method`` says why.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

BASELINE_S = 5  # whole seconds before the loss that define the expected rate
RECOVERED_FRACTION = 0.95  # a second at this share of the expected rate counts as recovered


@dataclass
class WorkerView:
    """What the master knows of one worker (epoch seconds on the master's clock)."""

    id: str
    index: int | None
    connected_s: float | None
    first_report_s: float | None
    last_report_s: float | None
    samples: int
    missing_since_s: float | None = None  # its heartbeats stopped (Locust: STATE_MISSING)
    healed_s: float | None = None  # its heartbeats came back
    final_report: bool = False


def estimate_lost(
    second_counts: dict[int, int], from_s: float, until_s: float, detected_s: float | None
) -> tuple[float | None, int | None, int | None, str]:
    """``(expected_per_s, samples_lost_estimate, recovered_second, method)`` for a gap from
    ``from_s`` to ``until_s`` (see the module docstring); the recovered second is the first
    whole second after the loss was detected back at the expected rate."""
    first = math.floor(from_s)
    base = [second_counts.get(s, 0) for s in range(first - BASELINE_S, first)]
    base = [c for c in base if c > 0]
    if len(base) < 2:
        return None, None, None, "no steady load before the loss to compare with (ramp-up?)"
    expected = float(statistics.median(base))
    last = math.floor(until_s)
    lost = 0.0
    recovered: int | None = None
    for s in range(first, last):
        have = second_counts.get(s, 0)
        lost += max(0.0, expected - have)
    search = max(first + 1, math.floor(detected_s) if detected_s is not None else first + 1)
    for s in range(search, max(second_counts, default=first) + 1):
        if second_counts.get(s, 0) >= RECOVERED_FRACTION * expected:
            recovered = s
            break
    method = (
        f"median completions/s of the {len(base)} whole seconds before the last report "
        f"({expected:.0f}/s) minus the actual, summed over {max(0, last - first)} s"
    )
    return expected, int(round(lost)), recovered, method


def gap_records(
    workers: list[WorkerView],
    second_counts: dict[int, int],
    end_s: float,
    report_interval_s: float,
) -> list[dict[str, Any]]:
    """One record per worker that went missing (or sent no final report and was replaced)."""
    lost = sorted(
        (w for w in workers if w.missing_since_s is not None),
        key=lambda w: w.missing_since_s or 0.0,
    )
    taken: set[str] = set()
    out = []
    for w in lost:
        last = w.last_report_s if w.last_report_s is not None else w.connected_s
        # Its replacement: the first worker that connected after this one last reported.
        replacement = next(
            (
                r
                for r in sorted(workers, key=lambda r: r.connected_s or math.inf)
                if r.id != w.id
                and r.id not in taken
                and r.connected_s is not None
                and last is not None
                and r.connected_s > last
            ),
            None,
        )
        if replacement is not None:
            taken.add(replacement.id)
        # The load is back once the lost worker's users run elsewhere: the master moves them
        # when it notices the loss (rebalancing), and spreads them onto the replacement once
        # that reports — whichever comes later (a replacement that joins before the loss is
        # noticed shares the users with the dead worker until then). Or when it comes back.
        back = replacement.first_report_s if replacement is not None else None
        if back is not None and w.missing_since_s is not None:
            back = max(back, w.missing_since_s)
        if w.healed_s is not None and (back is None or w.healed_s < back):
            back = w.healed_s
        until = min(end_s, back + report_interval_s) if back is not None else end_s
        expected = lost_estimate = recovered = None
        method = "the worker never reported"
        if last is not None:
            expected, lost_estimate, recovered, method = estimate_lost(
                second_counts, last, until, w.missing_since_s
            )
        out.append(
            {
                "worker": w.id,
                "index": w.index,
                "last_report_utc": w.last_report_s,
                "detected_lost_utc": w.missing_since_s,
                "healed_utc": w.healed_s,
                "replacement": replacement.id if replacement else None,
                "replacement_connected_utc": replacement.connected_s if replacement else None,
                "replacement_first_report_utc": replacement.first_report_s if replacement else None,
                # (an outage that began after the load ended cost no load: 0)
                "gap_s": max(0.0, (back if back is not None else end_s) - last)
                if last is not None
                else None,
                "detection_s": w.missing_since_s - last
                if last is not None and w.missing_since_s is not None
                else None,
                "samples_delivered": w.samples,
                "expected_per_s": expected,
                "samples_lost_estimate": lost_estimate,
                "recovered_utc": float(recovered) if recovered is not None else None,
                "estimate_method": method,
            }
        )
    return out
