"""The results directory (DESIGN.md "Results directory"; docs/ARCHITECTURE.md): how a run's
samples become files, and how they are read back.

* ``recorder`` — per load process: samples → per-second HDR histograms + event batches → a
  report (the hot path);
* ``aggregate`` — reports of every worker merged: counts, histograms, summary rows;
* ``events`` — the Arrow/Parquet form of the per-message events;
* ``writer`` — :class:`ResultsWriter`, the only writer of a results directory;
* ``reader`` — the readers below; ``layout`` — file names, errors, metadata.

Nothing here knows Locust or gevent (the Locust wiring is :mod:`echoswarm.plugins`).
"""

from echoswarm.results.aggregate import EXTRA_COLUMNS, SUMMARY_COLUMNS
from echoswarm.results.events import EVENTS_FILE
from echoswarm.results.layout import (
    HLOG_FILES,
    RUN_JSON,
    SUMMARY_CSV,
    ResultsError,
    ResultsWarning,
    default_run_dir,
    environment_info,
    json_safe,
)
from echoswarm.results.reader import (
    RunState,
    load_histograms,
    read_events,
    read_intervals,
    read_run,
    read_summary,
    run_state,
)
from echoswarm.results.writer import ResultsWriter, summary_csv_bytes

__all__ = [
    "EVENTS_FILE",
    "HLOG_FILES",
    "RUN_JSON",
    "SUMMARY_CSV",
    "EXTRA_COLUMNS",
    "SUMMARY_COLUMNS",
    "ResultsError",
    "ResultsWarning",
    "ResultsWriter",
    "RunState",
    "default_run_dir",
    "environment_info",
    "json_safe",
    "load_histograms",
    "read_events",
    "read_intervals",
    "read_run",
    "read_summary",
    "run_state",
    "summary_csv_bytes",
]
