"""Seed S001's workload: random 800×600 uint8 images sent as STATS requests over WebSocket.

Each image goes in one binary frame of :mod:`echoswarm.wire` with the STATS request flag; the
server (``python -m servers ws --work stats``) answers a STATS reply with the same seq and
timestamps and a JSON payload. Every reply is checked: a frame with the reply flag and our seq,
and JSON that is either the figures ``{"bytes", "max", "min", "mean", "median"}`` agreeing with
numpy's on the image we sent (``--reply after``) or the acknowledgement ``{"bytes": n, "status":
"accepted"}`` (``--reply before``). Anything else is a failed sample saying what was wrong.

No Locust here (so the sweep and the tests can import it without gevent): the users that send
these images live in ``locustfiles/image_frames.py``, on :class:`ImageLink`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import websocket

from echoswarm.wire import FLAG_STATS_REQUEST, HEADER_SIZE, FrameError, FrameTemplate, parse_frame

WIDTH, HEIGHT = 800, 600
POOL_SIZE = 4  # distinct images per process; replies are checked against the one sent
FIGURES = ("max", "min", "mean", "median")


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
    """None if a STATS reply's JSON is right for ``image``: all four figures equal to numpy's
    (``--reply after``), or none of them and ``"status": "accepted"`` (``--reply before``);
    ``bytes`` must be the image size either way. Else why not (a stable, groupable text)."""
    try:
        got = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return "STATS reply payload is not JSON"
    if not isinstance(got, dict):
        return "STATS reply JSON is not an object"
    if got.get("bytes") != image.stats["bytes"]:
        return "STATS reply bytes differs from the image size"
    present = [key for key in FIGURES if key in got]
    if not present:
        return None if got.get("status") == "accepted" else "STATS reply has no figures"
    if len(present) < len(FIGURES):
        return "STATS reply lacks " + ", ".join(k for k in FIGURES if k not in got)
    for key in FIGURES:
        value, expect = got[key], image.stats[key]
        # the server computes with numpy on the same bytes: only float printing may differ
        if not isinstance(value, int | float) or abs(value - expect) > 1e-9 * max(1.0, expect):
            return f"STATS reply {key} is wrong"
    return None


class ImageLink:
    """A WebSocket session sending images (implements ``gevent_stream.Link``); image = seq mod n."""

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

    def close(self) -> None:
        # A close frame, without waiting for the server's: a stalled server must not hold us.
        try:
            self.ws.close(timeout=0)
        except Exception:  # a broken connection may fail to close; nothing more to do
            pass


def per_user(images: int, parallel: int) -> int:
    """Images each of ``parallel`` users sends so that together they send at least ``images``."""
    return max(1, math.ceil(images / parallel))
