"""S001 — WebSocket images: one long serial connection vs many short parallel ones.

Each image is a random 800×600 uint8 frame (480,000 bytes) sent as a STATS request to
``python -m servers ws --work stats``; the server answers max/min/mean/median (``--reply
after``, the seed's "slow response") or acknowledges first and computes in the background
(``--reply before``, "fast response"). Every reply is checked against numpy's figures for the
image sent (or, for ``before``, must be the acknowledgement with the right size and seq).

* ``serial`` — one user, one long connection: send, wait for the answer, repeat ``--images``
  times. Rows ``serial connect``, ``serial msg`` (per image), ``serial session``.
* ``parallel`` — ``--parallel`` users, a fresh connection per image, ``--images`` in total.
  Rows ``parallel connect``, ``parallel roundtrip`` (send → reply), ``parallel session``
  (connect → closed, the per-image time including its connection).

The comparison (both kinds × both reply modes, one cell each, total time for N images and
per-image latency percentiles, and which kind wins on which measure)::

    python -m echoswarm sweep locustfiles/image_frames.py --images 1000

One run with both kinds at once (they then compete for the CPU; use the sweep to compare)::

    python -m echoswarm run locustfiles/image_frames.py -u 21 -- --images 200 --parallel 20
    locust -f locustfiles/image_frames.py --ws-url ws://127.0.0.1:8765/echo --image-kind serial
"""

import locust  # noqa: F401,I001  (gevent monkey-patching first)

import echoswarm.sweep_autostop  # noqa: F401  (the test ends when every user is done)
from echoswarm.images import ParallelImageUser, SerialImageUser

# One stats server; the sweep runs each cell with ``--reply after`` or ``--reply before``.
ECHOSWARM_SERVERS = [
    {
        "kind": "ws",
        "option": "--ws-url",
        "args": ["--work", "stats", "--reply", "after"],
        "name": "ws-stats",
    },
]


class SerialImages(SerialImageUser):
    """One long connection: image, stats, image, stats, …"""


class ParallelImages(ParallelImageUser):
    """A short-lived connection per image, ``--parallel`` of them at a time."""
