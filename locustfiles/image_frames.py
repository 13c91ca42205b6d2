"""S001 — WebSocket images: one long serial connection vs many short parallel ones.

Each image is a random 800×600 uint8 frame (480,000 bytes) sent as a STATS request to
``python -m servers ws --work stats``; the server answers max/min/mean/median (``--reply
after``, the seed's "slow response") or acknowledges first and computes in the background
(``--reply before``, "fast response"). Every reply is checked against numpy's figures for the
image sent (or, for ``before``, must be the acknowledgement with the right size and seq);
see :mod:`echoswarm.streams.images`.

* ``serial`` — one user, one long connection: send, wait for the answer, repeat ``--images``
  times. Rows ``serial connect``, ``serial msg`` (per image), ``serial session``.
* ``parallel`` — ``--parallel`` users, a fresh connection per image, ``--images`` in total
  (each user sends ⌈images / parallel⌉). Rows ``parallel connect``, ``parallel roundtrip``
  (send → reply), ``parallel session`` (connect → closed: the image's whole connection).

The comparison (both kinds × both reply modes, one cell each, total time for N images and
per-image latency percentiles, and which kind wins on which measure)::

    python -m echoswarm sweep locustfiles/image_frames.py --images 1000

One run with both kinds at once (they then compete for the CPU; use the sweep to compare)::

    python -m echoswarm run locustfiles/image_frames.py -u 21 -r 21 -- --images 200 --parallel 20
    locust -f locustfiles/image_frames.py --ws-url ws://127.0.0.1:8765/echo --image-kind serial

Spawn every user at once (``-r`` ≥ ``-u``): while Locust is still ramping up it replaces users
that have already finished, which would send more images than asked.

The test ends by itself once every user has sent its images (:mod:`echoswarm.plugins.autostop`).
"""

import locust  # noqa: F401,I001  (gevent monkey-patching first)

from collections.abc import Sequence
from typing import Any

from locust import events
from locust.exception import StopUser
from locust.runners import WorkerRunner

from echoswarm.users import (
    Image,
    ImageLink,
    WebSocketUser,
    end_test_when_users_done,
    image_pool,
    per_user,
    positive_int,
)

end_test_when_users_done()

# One stats server; the sweep runs each cell with ``--reply after`` or ``--reply before``.
ECHOSWARM_SERVERS = [
    {
        "kind": "ws",
        "option": "--ws-url",
        "args": ["--work", "stats", "--reply", "after"],
        "name": "ws-stats",
    },
]

DEFAULT_IMAGES = 100
DEFAULT_PARALLEL = 20
KINDS = ("serial", "parallel", "both")


class _ImageUser(WebSocketUser):
    """WebSocketUser's connections, carrying images (:class:`ImageLink`) instead of echoes."""

    abstract = True
    image_kind = ""

    def on_start(self) -> None:
        super().on_start()
        self.pool = image_pool()
        # These options are ours, not echoswarm.users.options' (which ``self.opts`` holds):
        # read them from Locust's parsed options (workers get them from the master).
        parsed = self.environment.parsed_options
        self.images_total = int(getattr(parsed, "images", None) or DEFAULT_IMAGES)
        self.parallel = int(getattr(parsed, "parallel", None) or DEFAULT_PARALLEL)

    def link_images(self) -> Sequence[Image]:
        return self.pool

    def connect(self) -> Any:
        opened = super().connect()
        if opened is None:
            return None
        link, conn_id, timer = opened
        return ImageLink(link.ws, self.link_images()), conn_id, timer


class SerialImages(_ImageUser):
    """One long connection: image, stats, image, stats, … (reconnects only after a failure)."""

    image_kind = "serial"
    fixed_count = 1
    pattern = "session"
    name_prefix = "serial "

    def on_start(self) -> None:
        super().on_start()
        self.remaining = self.images_total

    def session_once(self) -> None:
        if self.remaining <= 0:
            raise StopUser()
        opened = self.connect()
        if opened is not None:
            self.remaining -= self.pingpong_session(opened, "msg", self.remaining).sent


class ParallelImages(_ImageUser):
    """A short-lived connection per image; ``--parallel`` users share ``--images``."""

    image_kind = "parallel"
    pattern = "request"
    name_prefix = "parallel "

    def on_start(self) -> None:
        super().on_start()
        # WebSocketUser.request_once stops the user after this many connections.
        self.opts.connections_per_user = per_user(self.images_total, self.parallel)

    def link_images(self) -> Sequence[Image]:
        return (self.pool[self.connections % len(self.pool)],)


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    group = parser.add_argument_group("S001 images")
    group.add_argument(
        "--images", type=positive_int, default=DEFAULT_IMAGES, help="images per kind"
    )
    group.add_argument(
        "--parallel",
        type=positive_int,
        default=DEFAULT_PARALLEL,
        help="parallel users sharing them",
    )
    group.add_argument(
        "--image-kind", choices=KINDS, default="both", help="which user kind runs (start-up only)"
    )


@events.init.add_listener
def _select_kind(environment: Any, **_kw: Any) -> None:
    kind = getattr(environment.parsed_options, "image_kind", "both")
    if kind == "both" or isinstance(environment.runner, WorkerRunner):
        return  # the master decides what runs; a worker must know every class
    environment.user_classes[:] = [
        c for c in environment.user_classes if getattr(c, "image_kind", kind) == kind
    ]
