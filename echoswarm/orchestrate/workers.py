"""The Locust workers of a local run: started in numbered slots, replaced when one dies.

A worker that dies while the test runs (killed, out of memory, a crash) takes its users with it;
the load the user asked for would silently drop to what the others carry. So each worker runs
in a *slot* (``worker-1`` …): when a slot's process exits with a non-zero code while the master
is running the test, a replacement (``worker-1.1``, ``worker-1.2`` …) is started with the same
command line. The master runs with Locust's ``--enable-rebalancing``: when it notices the lost
worker (its heartbeats stop: about 3–4 s) it moves that worker's users onto the others, and when
the replacement connects it spreads them again. The gap — from the lost worker's last report to
the replacement's first, and the samples it cost — is recorded by the master's results plugin
(``run.json`` ``gaps``); this module records the process side (``orchestrator.replacements``).

Replacements are bounded (``max_restarts`` per run, default two per slot) so a worker that
crashes at every start cannot loop forever; after that the run goes on with the others.
A worker exiting with code 0 was told to quit by the master (the end of the test): never replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from echoswarm.measure import epoch_ns
from echoswarm.orchestrate.supervise import Child, Supervisor

RESTARTS_PER_SLOT = 2


@dataclass
class Slot:
    index: int  # 1-based
    argv: list[str]
    child: Child
    generation: int = 0  # replacements started so far


@dataclass
class WorkerPool:
    """Starts ``count`` workers with ``argv`` and replaces the ones that die mid-run."""

    sup: Supervisor
    argv: list[str]
    count: int
    max_restarts: int | None = None
    say: Callable[[str], None] = print
    slots: list[Slot] = field(default_factory=list)
    replacements: list[dict[str, Any]] = field(default_factory=list)
    lost: list[dict[str, Any]] = field(default_factory=list)
    _by_name: dict[str, Slot] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_restarts is None:
            self.max_restarts = RESTARTS_PER_SLOT * self.count

    def start(self) -> None:
        for i in range(1, self.count + 1):
            child = self.sup.start(f"worker-{i}", "worker", self.argv)
            slot = Slot(i, list(self.argv), child)
            self.slots.append(slot)
            self._by_name[child.name] = slot

    def on_exit(self, child: Child, at_s: float, replace: bool) -> None:
        """A worker exited. Non-zero while the test runs (``replace``): start its replacement
        (within the restart budget). Zero: the master told it to quit — nothing to do."""
        rc = child.poll()
        if rc == 0 or rc is None:
            return
        slot = self._by_name.get(child.name)
        record: dict[str, Any] = {
            "child": child.name,
            "slot": slot.index if slot else None,
            "pid": child.pid,
            "exit_code": rc,
            "exit_seen_utc": epoch_ns() / 1e9,
            "at_s": round(at_s, 2),
            "last_output": child.last_lines(),
            "replaced_by": None,
        }
        self.lost.append(record)
        if not replace or slot is None:
            self.say(
                f"\nwarning: {child.name} (pid {child.pid}) exited with code {rc} after "
                f"{at_s:.1f}s (the test is ending: not replaced)"
            )
            return
        if len(self.replacements) >= (self.max_restarts or 0):
            self.say(
                f"\nwarning: {child.name} (pid {child.pid}) exited with code {rc} after "
                f"{at_s:.1f}s; the restart budget ({self.max_restarts}) is spent: the run goes "
                "on with the other workers"
            )
            return
        slot.generation += 1
        name = f"worker-{slot.index}.{slot.generation}"
        new = self.sup.start(name, "worker", slot.argv)
        slot.child = new
        self._by_name[name] = slot
        record["replaced_by"] = name
        self.replacements.append(
            {
                "slot": slot.index,
                "lost": child.name,
                "lost_pid": child.pid,
                "lost_exit_code": rc,
                "lost_exit_seen_utc": record["exit_seen_utc"],
                "replacement": name,
                "replacement_pid": new.pid,
                "replacement_started_utc": epoch_ns() / 1e9,
            }
        )
        self.say(
            f"\nwarning: {child.name} (pid {child.pid}) exited with code {rc} after {at_s:.1f}s; "
            f"started {name} (pid {new.pid}) in its place — the master rebalances the users "
            "onto it (the gap is recorded in run.json)"
        )

    def alive(self) -> int:
        return sum(1 for s in self.slots if s.child.alive())

    def as_json(self) -> dict[str, Any]:
        return {
            "slots": self.count,
            "max_restarts": self.max_restarts,
            "lost": self.lost,
            "replacements": self.replacements,
        }
