"""The local memory of runs started from this checkout: ``.echoswarm/state.json``.

Only what the CLI needs to default ``--run-id`` and ``--region`` (AWS itself, through tags, is the
truth about what exists). ``ECHOSWARM_STATE_FILE`` overrides the path (tests use it). A file that
cannot be read, has the wrong shape or cannot be written is a :class:`StateError` — one line
naming the file, exit 2 — never a traceback; commands that write it check that they can before
they touch AWS (:func:`check_writable`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from infra.spec import UsageError

ROOT = Path(__file__).resolve().parent.parent


class StateError(UsageError):
    """The state file is unreadable, malformed or unwritable (the user's to fix: exit 2)."""


def path() -> Path:
    override = os.environ.get("ECHOSWARM_STATE_FILE")
    return Path(override) if override else ROOT / ".echoswarm" / "state.json"


def load() -> dict[str, Any]:
    p = path()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return {"last_run": None, "runs": {}}
    except (OSError, ValueError) as e:
        raise StateError(f"cannot read the state file {p}: {e}") from None
    problem = _shape_problem(data)
    if problem:
        raise StateError(f"the state file {p} is malformed ({problem}); fix or delete it")
    data.setdefault("last_run", None)
    data.setdefault("runs", {})
    return dict(data)


def _shape_problem(data: Any) -> str:
    if not isinstance(data, dict):
        return f"expected a JSON object, found {type(data).__name__}"
    runs = data.get("runs", {})
    if not isinstance(runs, dict):
        return '"runs" is not an object'
    bad = sorted(k for k, v in runs.items() if not isinstance(v, dict))
    if bad:
        return f"run {bad[0]!r} is not an object"
    last = data.get("last_run")
    if last is not None and not isinstance(last, str):
        return '"last_run" is not a string'
    return ""


def check_writable() -> None:
    """Fail now (before anything is created) if the state file could not be saved later."""
    p = path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        probe = p.with_name(p.name + ".probe")
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise StateError(f"cannot write the state file {p}: {e.strerror or e}") from None
    if p.exists() and not os.access(p, os.W_OK):
        raise StateError(f"cannot write the state file {p}: permission denied")


def save(data: dict[str, Any]) -> None:
    p = path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(p)  # atomic: a crash never leaves half a file
    except OSError as e:
        raise StateError(f"cannot write the state file {p}: {e.strerror or e}") from None


def remember(run_id: str, record: dict[str, Any]) -> None:
    """Record (or update) a run and make it the default for later commands."""
    data = load()
    data["runs"].setdefault(run_id, {}).update(record)
    data["last_run"] = run_id
    save(data)


def recall(run_id: str | None) -> tuple[str | None, dict[str, Any]]:
    """(run id, its record): the given id, else the last run started here."""
    data = load()
    rid = run_id or data.get("last_run")
    return rid, (data["runs"].get(rid, {}) if rid else {})


def forget(run_id: str) -> None:
    """Mark a run as gone (kept in the file for ``fetch`` of a purged-later bucket)."""
    data = load()
    if run_id in data["runs"]:
        data["runs"][run_id]["down"] = True
        save(data)
