"""The instrument's own overhead, measured outside a run by ``python -m bench overhead``
(``build/bench-results/overhead.json``), carried into a run's ``run.json`` as
``instrument_overhead`` so the report states it beside the results.

``python -m echoswarm demo`` picks the saved file up by itself when it exists; ``run`` and
``demo`` take ``--instrument-overhead FILE`` for another one. The figures are "ours minus a lean
reference client" per transport, p50 and p99 in ms, with when and how they were measured."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# where `python -m bench overhead` saves (the checkout's build/)
SAVED = Path(__file__).resolve().parents[2] / "build" / "bench-results" / "overhead.json"


class OverheadFileError(ValueError):
    """The file is missing or is not what ``python -m bench overhead`` writes (one line)."""


def load(path: Path) -> dict[str, dict[str, Any]]:
    """``{transport: {"p50_ms", "p99_ms", "source", "measured_utc", ...}}`` from a saved file."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise OverheadFileError(f"instrument overhead file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise OverheadFileError(f"instrument overhead file {path} is unreadable: {exc}") from None
    transports = doc.get("transports") if isinstance(doc, dict) else None
    if not isinstance(transports, dict) or not transports:
        raise OverheadFileError(
            f"{path} has no per-transport figures (write it with: python -m bench overhead)"
        )
    out: dict[str, dict[str, Any]] = {}
    for transport, entry in transports.items():
        if not isinstance(entry, dict):
            raise OverheadFileError(f"{path}: the entry for {transport!r} is not an object")
        for key in ("p50_ms", "p99_ms"):
            value = entry.get(key)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise OverheadFileError(f"{path}: {transport} {key} is not a number")
        out[str(transport)] = {
            **entry,
            "measured_utc": doc.get("measured_utc", ""),
            "streams": doc.get("streams"),
        }
    return out
