"""The functions rq workers run (imported by name: ``servers.jobs.tasks.analyze_upload``).

Kept in a module of their own, free of the web app, so a worker imports only what a job needs.
"""

from __future__ import annotations

from pathlib import Path

from servers.jobs.audio import analyze


def analyze_upload(path: str, passes: int) -> dict[str, float | int]:
    """The queued job: the saved upload's dominant frequency (the same work as the inline one)."""
    return analyze(Path(path).read_bytes(), passes)


def delete_upload(path: str) -> bool:
    """The cleanup job scheduled after each upload (the seed's ``enqueue_in``): True if removed."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    return True
