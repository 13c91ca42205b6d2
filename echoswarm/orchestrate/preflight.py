"""Checks before anything starts: the locustfile holds Locust users and takes the arguments
given to it, and the results directory can be made.

The orchestrator must not import a locustfile (it would monkey-patch this process with gevent
and run the module's code), so Locust itself is asked, in a child process:
``python -m locust -f FILE --list ARGS`` loads the file the way the master and workers will,
parses the scenario's own arguments (everything after ``--``) and prints the User classes it
found. A file without any, one that fails to import, or an argument Locust refuses is then one
line and exit 2 — before a server, a master or a results directory exists. It costs one Locust
start-up (~1.5 s on the 2-core test machine), paid once per run or sweep.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

LIST_TIMEOUT_S = 60.0


class PreflightError(ValueError):
    """A usage error found before starting (the message is one line)."""


def user_classes(locustfile: Path, locust_args: Sequence[str] = ()) -> list[str]:
    """The Locust User classes ``locustfile`` defines, as Locust's ``--list`` reports them.

    Raises :class:`PreflightError` when there is none, when the file fails to load, or when
    Locust refuses one of ``locust_args``."""
    root = str(Path(__file__).resolve().parent.parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(locustfile), "--list", *locust_args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=LIST_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise PreflightError(
            f"{locustfile}: Locust did not finish loading it within {LIST_TIMEOUT_S:g}s "
            "(does it block at import?)"
        ) from None
    if proc.returncode == 2 and "error:" in proc.stderr:
        # argparse: a bad scenario argument (after --) or a bad Locust option
        message = _last_line(proc.stderr).split("error:", 1)[1].strip()
        raise PreflightError(f"locust: {message}")
    if proc.returncode != 0:
        raise PreflightError(
            f"{locustfile} failed to load (exit {proc.returncode}): {_last_line(proc.stderr)}"
        )
    lines = proc.stdout.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Available Users:")
    except StopIteration:
        raise PreflightError(
            f"{locustfile}: Locust listed no users ({_last_line(proc.stdout + proc.stderr)})"
        ) from None
    users = [line.strip() for line in lines[start + 1 :] if line.strip()]
    if not users:
        raise PreflightError(
            f"{locustfile} defines no Locust User class (a locustfile needs at least one "
            "non-abstract User, e.g. a subclass of echoswarm.users.TcpUser)"
        )
    return users


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Locust's own log lines ("[date] host/INFO/locust.main: Starting Locust") are not the reason
    reasons = [line for line in lines if "/INFO/" not in line]
    return (reasons or lines or ["(no output)"])[-1]


def make_results_dir(path: Path) -> None:
    """Create the run's results directory (and its parents); one line when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PreflightError(
            f"cannot create the results directory {path}: {exc.strerror or exc}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PreflightError(f"the results directory {path} is not writable")
