"""Ctrl-C, SIGTERM and SIGHUP end every ``python -m infra`` command the same way: ``up`` rolls
back what it created, and the process exits 128 + the signal's number (130, 143, 129), the
project's convention for an interrupted run.

Why the signal is not simply raised where it lands: a signal that arrives while an AWS call that
*creates* something is in flight would lose the answer — the resource would exist but never
reach the rollback ledger (three running instances left behind). So while a command runs, the
handler only notes the first signal, and :class:`Interrupted` is raised at the next safe point:
before the next AWS call (a botocore ``before-call`` hook, :func:`checkpoint`) or at once if the
command is waiting in :func:`sleep`. A second signal before that point raises immediately (the
user insists; ``down`` finds anything in flight by its tags). While the rollback itself runs
(:func:`shielded`) signals are counted and ignored, so the undo finishes.

The handlers print nothing (a print inside a handler can collide with one it interrupted); the
caller reports.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):  # like KeyboardInterrupt: not caught by `except Exception`
    """A signal stopped the command; ``detail`` says what was undone (or not)."""

    def __init__(self, signum: int, detail: str = "") -> None:
        self.signum = int(signum)
        self.detail = detail
        super().__init__(self.name + (f": {detail}" if detail else ""))

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass
class _State:
    pending: int | None = None
    sleeping: bool = False
    shielded: int = 0
    ignored: int = 0


_state = _State()


def _handler(signum: int, _frame: Any) -> None:
    if _state.shielded:
        _state.ignored += 1
        return
    if _state.pending is not None or _state.sleeping:  # insisted, or nothing in flight
        _state.pending = _state.pending or signum
        raise Interrupted(_state.pending)
    _state.pending = signum


def checkpoint(**_: Any) -> None:
    """Raise the noted signal now (a safe point: nothing is in flight). Also a botocore hook."""
    if _state.pending is not None and not _state.shielded:
        raise Interrupted(_state.pending)


def sleep(seconds: float) -> None:
    """``time.sleep`` that a signal ends at once (waiting is always a safe point)."""
    _state.sleeping = True
    try:
        checkpoint()
        time.sleep(seconds)
    finally:
        _state.sleeping = False
    checkpoint()


@contextmanager
def shielded() -> Iterator[None]:
    """Signals during the block are counted and ignored (the rollback must finish)."""
    _state.shielded += 1
    try:
        yield
    finally:
        _state.shielded -= 1


def ignored_count() -> int:
    return _state.ignored


@contextmanager
def installed() -> Iterator[None]:
    """Handle SIGINT/SIGTERM/SIGHUP as above for the duration of one command."""
    global _state
    try:
        old = {s: signal.signal(s, _handler) for s in SIGNALS}
    except ValueError:  # not the main thread (an embedding caller): leave signals alone
        yield
        return
    _state = _State()
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _state = _State()
