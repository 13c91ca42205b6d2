"""The WebSocket server's ``--work stats`` job: pixel statistics with numpy, in worker processes.

``compute_stats`` is the CPU-bound work of seed S001 (max, min, mean, median of an image read as
uint8). It runs in a process pool so the server's event loop never blocks on it. The pool is
forked and warmed before the event loop starts: forking later, from a process with a running
loop and executor threads, is what makes fork unsafe.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

_PR_SET_PDEATHSIG = 1


def compute_stats(payload: bytes) -> dict[str, Any]:
    """``{"bytes", "max", "min", "mean", "median"}`` of ``payload`` read as uint8.

    An empty payload has no extremes: the four figures are then ``None`` (JSON null).
    """
    pixels = np.frombuffer(payload, dtype=np.uint8)
    if pixels.size == 0:
        return {"bytes": 0, "max": None, "min": None, "mean": None, "median": None}
    return {
        "bytes": int(pixels.size),
        "max": int(pixels.max()),
        "min": int(pixels.min()),
        "mean": float(pixels.mean()),
        "median": float(np.median(pixels)),
    }


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group; only the server process should react to it
    # (it shuts the pool down). And a worker must not outlive a server that was SIGKILLed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: best effort only
        pass


def start_pool(workers: int) -> ProcessPoolExecutor:
    """A warmed pool of ``workers`` processes (call before starting the event loop)."""
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_worker_init,
    )
    # With fork, the first submit starts every worker; do it now and wait, so the first request
    # does not pay for it and no fork happens once the loop runs.
    pool.submit(compute_stats, b"\0").result(timeout=60)
    return pool
