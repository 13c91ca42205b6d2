"""Tables, notes and plots of finished sweeps (``python -m analysis sweep DIR``), one module
per grid: ``tcp`` (S003), ``images`` (S001), ``jobs`` (S004); ``common`` reads the cells. The
sweeps themselves run in :mod:`echoswarm.sweep`, which writes ``sweep.json`` and calls this.
"""

from __future__ import annotations

from pathlib import Path

from analysis.sweeps.common import read_sweep
from echoswarm.results import ResultsError


def render_sweep(sweep_dir: Path) -> tuple[str, list[Path]]:
    """Write ``sweep.csv``, ``sweep.md`` and ``sweep.png``; returns (the markdown, files)."""
    plan, cells = read_sweep(sweep_dir)
    grid = plan.get("grid")
    if grid == "tcp":
        from analysis.sweeps import tcp as module
    elif grid == "images":
        from analysis.sweeps import images as module  # type: ignore[no-redef]
    elif grid == "jobs":
        from analysis.sweeps import jobs as module  # type: ignore[no-redef]
    else:
        raise ResultsError(f"{sweep_dir / 'sweep.json'}: unknown grid {grid!r}")
    if not cells:
        return "no cells ran", []
    files = module.render(module.table(cells, plan), sweep_dir, plan)
    return (sweep_dir / "sweep.md").read_text().rstrip(), files
