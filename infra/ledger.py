"""What one ``up`` created, so that a failure half way can undo exactly that, newest first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from infra.aws import error_text, progress


@dataclass
class Ledger:
    entries: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def add(self, what: str, undo: Callable[[], object]) -> None:
        progress(f"  created {what}")
        self.entries.append((what, undo))

    def rollback(self) -> list[str]:
        """Undo everything recorded, newest first; returns what could not be undone."""
        failed = []
        for what, undo in reversed(self.entries):
            try:
                undo()
                progress(f"  rolled back {what}")
            except Exception as e:  # keep undoing the rest; report what stayed
                failed.append(f"{what}: {error_text(e)}")
        self.entries.clear()
        return failed
