"""pandas analysis of echoswarm results directories.

Notebook use::

    import analysis
    run = analysis.load("results/20260101T000000Z-audio_stream")
    run.summary, run.timeline, run.histograms, run.events, run.run
    analysis.summary_table(run); analysis.jitter_table(run); analysis.connect_table(run)
    analysis.instrument_table(run)          # sender lag and bench overhead per transport
    analysis.plots.spectrum(run)            # a matplotlib Figure
    analysis.compare(run_a, run_b)          # side-by-side DataFrame

Nothing here prints; the CLI (``python -m analysis``) does.
"""

from __future__ import annotations

from analysis import faults, plots
from analysis.compare import compare
from analysis.load import Run, load
from analysis.report import write_report
from analysis.summaries import (
    connect_table,
    instrument_table,
    jitter_table,
    lag_table,
    summary_table,
)
from echoswarm.results import ResultsError, ResultsWarning

__all__ = [
    "ResultsError",
    "ResultsWarning",
    "Run",
    "compare",
    "connect_table",
    "faults",
    "instrument_table",
    "jitter_table",
    "lag_table",
    "load",
    "plots",
    "summary_table",
    "write_report",
]
