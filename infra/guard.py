"""The max-lifetime guard of every node: what sets it at boot, and what reads it back.

It is a transient systemd timer (``systemd-run --on-active``: PID 1 holds it — not a
``shutdown`` process nobody checks) that powers the node off; instances are launched with
``InstanceInitiatedShutdownBehavior=terminate``, so power-off = terminate. It fires at the
launch's deadline (the ``echoswarm:expires`` tag, fixed when the user-data is rendered) and
never later than ``--max-lifetime`` after this boot, so a reboot cannot extend a node's life.
:func:`guard_script` (cloud-init ``bootcmd``, every boot) checks that PID 1 really holds the timer
and powers the node off at once if it does not: a node that cannot guarantee its end does not
run. ``status`` runs :data:`GUARD_REPORT` on each node (SSM) and reports PID 1's answer, not the
tag. :func:`guard_units` renders the same properties as unit files for ``systemd-analyze verify``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import UTC, datetime

GUARD_UNIT = "echoswarm-lifetime"
GUARD_DESCRIPTION = "echoswarm max-lifetime guard"
GUARD_EXEC = ["/usr/bin/systemctl", "--no-block", "poweroff"]
GUARD_TIMER_PROPERTIES = {"AccuracySec": "1s"}  # systemd's default slack is a whole minute
GUARD_MARK = "echoswarm-guard"
# What `status` runs on each node (SSM): PID 1's view of the timer, plus the clocks to turn its
# monotonic deadline into a wall-clock time (/proc/uptime ≈ CLOCK_MONOTONIC: EC2 never suspends).
GUARD_REPORT = (
    f"printf '{GUARD_MARK} active=%s next_usec=%s uptime=%s now=%s\\n' "
    f'"$(systemctl is-active {GUARD_UNIT}.timer)" '
    '"$(busctl get-property org.freedesktop.systemd1 '
    "/org/freedesktop/systemd1/unit/echoswarm_2dlifetime_2etimer "
    'org.freedesktop.systemd1.Timer NextElapseUSecMonotonic 2>/dev/null | cut -d" " -f2)" '
    '"$(cut -d" " -f1 /proc/uptime)" "$(date +%s)"'
)


def guard_script(lifetime_minutes: int, expires_epoch: int) -> str:
    """The bootcmd shell script that sets (and checks) the lifetime guard; see the docstring."""
    timer_props = [f"--timer-property={k}={v}" for k, v in GUARD_TIMER_PROPERTIES.items()]
    run = " ".join(
        [
            shlex.join(
                ["systemd-run", f"--unit={GUARD_UNIT}", f"--description={GUARD_DESCRIPTION}"]
            ),
            '"--on-active=${left}s"',  # the one shell expansion
            shlex.join([*timer_props, *GUARD_EXEC]),
        ]
    )
    off = shlex.join(GUARD_EXEC[1:])
    return "\n".join(
        [
            f"max={lifetime_minutes * 60}  # never longer than --max-lifetime from this boot",
            f"expires={int(expires_epoch)}  # the launch's deadline (echoswarm:expires)",
            "left=$((expires - $(date +%s)))",
            'if [ "$left" -gt "$max" ]; then left=$max; fi',
            'if [ "$left" -le 0 ]; then',
            "  echo 'echoswarm: max lifetime already reached: powering off' >&2",
            f"  systemctl {off}",
            "  exit 0",
            "fi",
            run,
            f"if systemctl is-active --quiet {GUARD_UNIT}.timer; then",
            '  echo "echoswarm: lifetime guard set: power-off (= terminate) in ${left}s"',
            "else",
            "  echo 'echoswarm: the lifetime guard could not be set: powering off now' >&2",
            f"  systemctl {off}",
            "fi",
        ]
    )


def guard_units(lifetime_minutes: int) -> dict[str, str]:
    """The timer and service ``systemd-run`` creates, as unit files (for verification only)."""
    timer = "\n".join(
        [
            "[Unit]",
            f"Description={GUARD_DESCRIPTION}",
            "",
            "[Timer]",
            f"OnActiveSec={lifetime_minutes * 60}s",
            *(f"{k}={v}" for k, v in GUARD_TIMER_PROPERTIES.items()),
            "",
        ]
    )
    service = "\n".join(
        [
            "[Unit]",
            f"Description={GUARD_DESCRIPTION}",
            "",
            "[Service]",
            f"ExecStart={shlex.join(GUARD_EXEC)}",
            "",
        ]
    )
    return {f"{GUARD_UNIT}.timer": timer, f"{GUARD_UNIT}.service": service}


@dataclass(frozen=True)
class Guard:
    """One node's guard as its PID 1 reports it. ``answered`` False: no report (``note`` says
    why); ``active`` False with an answer: the node has NO guard; ``ends`` None: not known."""

    answered: bool
    active: bool = False
    ends: datetime | None = None
    note: str = ""


def parse_guard(output: str) -> Guard:
    """The :data:`GUARD_REPORT` line in a node's output → its Guard."""
    line = next((ln for ln in output.splitlines() if ln.startswith(GUARD_MARK + " ")), None)
    if line is None:
        return Guard(False, note="no report")
    fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    if fields.get("active") != "active":
        return Guard(True, False, note=f"timer {fields.get('active') or 'missing'}")
    try:
        left_s = int(fields["next_usec"]) / 1e6 - float(fields["uptime"])
        ends = datetime.fromtimestamp(int(fields["now"]) + left_s, UTC)
    except (KeyError, ValueError):
        return Guard(True, True, note="active, deadline unreadable")
    return Guard(True, True, ends)
