"""The local memory of runs started from this checkout: ``.echoswarm/state.json``.

Only what the CLI needs to default ``--run-id`` and ``--region`` (AWS itself, through tags, is the
truth about what exists). ``ECHOSWARM_STATE_FILE`` overrides the path (tests use it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


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
        raise ValueError(f"cannot read the state file {p}: {e}") from e
    data.setdefault("last_run", None)
    data.setdefault("runs", {})
    return data


def save(data: dict[str, Any]) -> None:
    p = path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(p)  # atomic: a crash never leaves half a file


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
