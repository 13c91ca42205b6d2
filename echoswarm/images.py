"""Seed S001's workload: random 800×600 uint8 images sent as STATS requests over WebSocket.

Each image goes in one binary frame of :mod:`echoswarm.wire` with the STATS request flag; the
server (``python -m servers ws --work stats``) answers a STATS reply with the same seq and
timestamps and a JSON payload. Every reply is checked: a frame with the reply flag and our seq,
and JSON that is either the figures ``{"bytes", "max", "min", "mean", "median"}`` agreeing with
numpy's on the image we sent (``--reply after``) or the acknowledgement ``{"bytes": n, "status":
"accepted"}`` (``--reply before``). Anything else is a failed sample saying what was wrong.

Two abstract users, made concrete by ``locustfiles/image_frames.py``:

* :class:`SerialImageUser` — one long connection: send an image, wait for its reply, repeat,
  ``--images`` times (rows ``serial connect``, ``serial msg``, ``serial session``);
* :class:`ParallelImageUser` — a fresh connection per image, many users at once, together
  ``--images`` images (each of ``--parallel`` users sends ⌈images / parallel⌉); rows
  ``parallel connect``, ``parallel roundtrip`` (send → reply), ``parallel session`` (connect →
  closed).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import locust  # noqa: F401  (gevent monkey-patching before any socket use)
import numpy as np
import websocket
from locust import events
from locust.exception import StopUser

from echoswarm.users._stream import Stream, stream_config
from echoswarm.users.websocket import WebSocketUser, check_stats_json
from echoswarm.wire import FLAG_STATS_REQUEST, HEADER_SIZE, FrameError, FrameTemplate, parse_frame

WIDTH, HEIGHT = 800, 600
POOL_SIZE = 4  # distinct images per process; replies are checked against the one sent
KINDS = ("serial", "parallel", "both")
FIGURES = ("max", "min", "mean", "median")
DEFAULT_IMAGES = 100
DEFAULT_PARALLEL = 20


@dataclass(frozen=True)
class Image:
    pixels: bytes
    stats: dict[str, float]  # numpy's figures: the reference a STATS reply must match


def reference_stats(pixels: np.ndarray) -> dict[str, float]:
    flat = pixels.reshape(-1)
    return {
        "bytes": int(flat.size),
        "max": int(flat.max()),
        "min": int(flat.min()),
        "mean": float(flat.mean()),
        "median": float(np.median(flat)),
    }


def make_image(seed: int, width: int = WIDTH, height: int = HEIGHT) -> Image:
    """A reproducible random ``height × width`` uint8 image and its figures."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width), dtype=np.uint8)
    return Image(pixels.tobytes(), reference_stats(pixels))


@functools.cache
def image_pool(size: int = POOL_SIZE) -> tuple[Image, ...]:
    """The process's images (made once: a user must not pay for numpy in its timed loop)."""
    return tuple(make_image(seed) for seed in range(size))


def check_reply(payload: bytes, image: Image) -> str | None:
    """None if a STATS reply's JSON is right for ``image`` (figures or acknowledgement)."""
    error = check_stats_json(payload, image.stats)
    if error is not None:
        return error
    got = json.loads(payload)
    if all(key in got for key in FIGURES):
        return None  # figures present and checked against numpy's above
    if got.get("status") == "accepted" and not any(key in got for key in FIGURES):
        return None  # --reply before: acknowledged, computed in the background
    return "STATS reply has neither all four figures nor an acceptance"


class ImageLink:
    """A WebSocket session sending images (implements ``_stream.Link``); image = seq mod n."""

    def __init__(self, ws: Any, images: Sequence[Image]) -> None:
        self.ws = ws
        self.images = tuple(images)
        self.nbytes = HEADER_SIZE + len(self.images[0].pixels)
        self._templates = [
            FrameTemplate(self.nbytes, flags=FLAG_STATS_REQUEST, payload=img.pixels)
            for img in self.images
        ]

    def send(self, seq: int, intended_ns: int, sent_ns: int) -> None:
        self.ws.send_bytes(
            self._templates[seq % len(self._templates)].stamp(seq, intended_ns, sent_ns)
        )

    def recv(self) -> tuple[int, int, int, str | None]:
        try:
            data = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            raise TimeoutError from None
        if not isinstance(data, bytes):
            return -1, 0, 0, "expected a binary STATS reply, got text"
        try:
            header, payload = parse_frame(data)
        except FrameError as exc:
            return -1, 0, 0, f"bad STATS reply frame: {type(exc).__name__}"
        stamps = header.seq, header.intended_send_ns, header.sent_ns
        if not header.is_stats_reply:
            return (*stamps, "not a STATS reply")
        return (*stamps, check_reply(bytes(payload), self.images[header.seq % len(self.images)]))

    def set_timeout(self, seconds: float | None) -> None:
        self.ws.settimeout(seconds)

    def close(self) -> None:
        try:
            self.ws.shutdown()
        except Exception:  # noqa: S110 - closing a broken socket may fail; nothing to do
            pass


class _ImageUser(WebSocketUser):
    """Common part: options, the image pool, and image links instead of echo links."""

    abstract = True
    image_kind = ""

    def on_start(self) -> None:
        super().on_start()
        self.pool = image_pool()
        # Our options are not echoswarm.users.options' (which ``self.opts`` holds): read them
        # from Locust's parsed options (workers get them from the master).
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


class SerialImageUser(_ImageUser):
    """One long connection, images one after another (reconnects only after a failure)."""

    abstract = True
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
        if opened is None:
            return
        link, conn_id, timer = opened
        cfg = replace(
            stream_config(self.opts, "ws", self.name_prefix + "msg"),
            pingpong=True,
            max_messages=self.remaining,
            duration_ns=None,
        )
        stream = Stream(cfg, self.sink, user_id=self.user_id, conn_id=conn_id, nbytes=link.nbytes)
        stream.run_pingpong(link)
        self.remaining -= stream.sent
        self.sink(
            timer.sample(
                "ws",
                self.name_prefix + "session",
                stream.sent * link.nbytes,
                stream.error,
                user_id=self.user_id,
                conn_id=conn_id,
            )
        )
        self._after(stream.error)


class ParallelImageUser(_ImageUser):
    """A fresh connection per image; ``--parallel`` users share ``--images``."""

    abstract = True
    image_kind = "parallel"
    pattern = "request"
    name_prefix = "parallel "

    def on_start(self) -> None:
        super().on_start()
        # WebSocketUser.request_once stops the user after this many connections.
        self.opts.connections_per_user = per_user(self.images_total, self.parallel)

    def link_images(self) -> Sequence[Image]:
        return (self.pool[self.connections % len(self.pool)],)


def per_user(images: int, parallel: int) -> int:
    """Images each parallel user sends so that together they send at least ``images``."""
    return max(1, math.ceil(images / parallel))


# -- options ----------------------------------------------------------------------------------
def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    group = parser.add_argument_group("S001 images")
    group.add_argument(
        "--images", type=_positive, default=DEFAULT_IMAGES, help="images per user kind"
    )
    group.add_argument(
        "--parallel",
        type=_positive,
        default=DEFAULT_PARALLEL,
        help="parallel users the images are split over",
    )
    group.add_argument(
        "--image-kind", choices=KINDS, default="both", help="which user kind runs (start-up only)"
    )


@events.init.add_listener
def _select_kind(environment: Any, **_kw: Any) -> None:
    kind = getattr(environment.parsed_options, "image_kind", "both")
    if kind == "both" or isinstance(environment.runner, locust.runners.WorkerRunner):
        return  # the master decides what runs; a worker must know every class
    environment.user_classes[:] = [
        c for c in environment.user_classes if getattr(c, "image_kind", kind) == kind
    ]
