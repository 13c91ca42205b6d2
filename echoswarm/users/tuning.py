"""Process tuning for load generation, applied through Locust's events (import to enable).

* **Garbage collection**: once every user (and its connection) exists, the long-lived objects
  are moved out of the collector's view (``gc.freeze``) and full collections made rare: with
  1,000 streams a gen-2 collection cost 30-60 ms of one core, i.e. hundreds of messages sent
  late (bench/README.md).
* **The hub's clock**: importing the users ran for a while without the gevent loop turning, so
  its cached "now" is stale; Locust arms the ``--run-time`` timer right after the ``init``
  event, and a stale clock made the run end early by the import time (seen: ``-t 3s`` ending
  after 1.1 s).
"""

from __future__ import annotations

import gc
from typing import Any

import gevent
import locust  # noqa: F401,I001  (gevent monkey-patching first)
from locust import events


@events.spawning_complete.add_listener
def _freeze_after_spawn(**_kw: Any) -> None:
    gc.freeze()
    gc.set_threshold(700, 10, 1000)


@events.init.add_listener
def _refresh_hub_clock(**_kw: Any) -> None:
    gevent.get_hub().loop.update_now()
