"""S001: images, their reply checks, and the serial-vs-parallel comparison end to end."""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from echoswarm.results import read_events, read_summary
from echoswarm.streams.images import (
    HEIGHT,
    WIDTH,
    ImageLink,
    check_reply,
    image_pool,
    make_image,
    per_user,
)
from echoswarm.wire import FLAG_STATS_REPLY, FLAG_STATS_REQUEST, build_frame, parse_frame
from tests import procs

IMAGES = "locustfiles/image_frames.py"


def test_images_are_800x600_uint8_with_numpy_figures() -> None:
    img = make_image(7)
    assert len(img.pixels) == WIDTH * HEIGHT == 480_000
    pixels = np.frombuffer(img.pixels, dtype=np.uint8)
    assert img.stats == {
        "bytes": 480_000,
        "max": int(pixels.max()),
        "min": int(pixels.min()),
        "mean": float(pixels.mean()),
        "median": float(np.median(pixels)),
    }
    assert make_image(7) == img and make_image(8).pixels != img.pixels
    assert len({i.pixels for i in image_pool()}) == len(image_pool())


def _figures(img_stats: dict[str, float], **changes: object) -> bytes:
    return json.dumps({**img_stats, **changes}).encode()


def test_check_reply_accepts_right_figures_or_an_acceptance_and_nothing_else() -> None:
    img = make_image(1)
    s = img.stats
    assert check_reply(_figures(s), img) is None
    assert check_reply(json.dumps({"bytes": 480_000, "status": "accepted"}).encode(), img) is None
    assert check_reply(_figures(s, mean=s["mean"] + 0.5), img) == "STATS reply mean is wrong"
    assert check_reply(_figures(s, median=s["median"] + 1), img) == "STATS reply median is wrong"
    assert check_reply(_figures(s, max=254 if s["max"] == 255 else 255), img) is not None
    assert check_reply(_figures(s, bytes=479_999), img) == (
        "STATS reply bytes differs from the image size"
    )
    partial = {k: v for k, v in s.items() if k != "median"}
    assert check_reply(json.dumps(partial).encode(), img) == "STATS reply lacks median"
    assert check_reply(b'{"bytes": 480000}', img) == "STATS reply has no figures"
    assert check_reply(b"[1, 2]", img) == "STATS reply JSON is not an object"
    assert check_reply(b"not json", img) == "STATS reply payload is not JSON"
    accepted_with_figures = _figures(s, status="accepted", mean=1.0)
    assert check_reply(accepted_with_figures, img) == "STATS reply mean is wrong"
    assert check_reply(_figures(s, mean="127.5"), img) == "STATS reply mean is wrong"


class _Replies:
    """The two calls ImageLink makes on a websocket-client connection, with canned replies."""

    def __init__(self, replies: list[bytes | str]) -> None:
        self.replies = replies
        self.sent: list[bytes] = []

    def send_bytes(self, data: bytes | bytearray) -> None:
        self.sent.append(bytes(data))

    def recv(self) -> bytes | str:
        return self.replies.pop(0)


def test_image_link_sends_stats_requests_and_judges_replies() -> None:
    pool = image_pool()
    good = build_frame(
        32 + len(_figures(pool[1].stats)),
        seq=1,
        intended_send_ns=5,
        sent_ns=6,
        flags=FLAG_STATS_REPLY,
        payload=_figures(pool[1].stats),
    )
    # seq 1 answered with image 0's figures: wrong for the image that was sent
    swapped = build_frame(
        32 + len(_figures(pool[0].stats)),
        seq=1,
        flags=FLAG_STATS_REPLY,
        payload=_figures(pool[0].stats),
    )
    echoed = build_frame(64, seq=1, flags=FLAG_STATS_REQUEST)
    ws = _Replies([good, swapped, echoed, "text"])
    link = ImageLink(ws, pool)
    link.send(1, 5, 6)
    header, payload = parse_frame(ws.sent[0])
    assert header.is_stats_request and header.seq == 1 and bytes(payload) == pool[1].pixels
    assert link.nbytes == len(ws.sent[0]) == 480_032
    assert link.recv() == (1, 5, 6, None)
    assert link.recv()[3] is not None
    assert link.recv()[3] == "not a STATS reply"
    assert link.recv()[3] == "expected a binary STATS reply, got text"


def test_parallel_users_share_the_images() -> None:
    assert per_user(1000, 50) == 20
    assert per_user(10, 3) == 4  # rounded up: at least the images asked for
    assert per_user(2, 5) == 1


@pytest.mark.timeout(60)
def test_an_echo_server_is_not_a_stats_server(
    tmp_path: Path, start_server: Callable[..., procs.Proc]
) -> None:
    """Against a plain echo, every image fails loudly; and the run ends when the user is done
    (autostop), long before its 60 s limit."""
    server = start_server("ws", "--work", "none")
    results = tmp_path / "r"
    proc = subprocess.run(
        [procs.PYTHON, "-m", "locust", "-f", IMAGES, "--headless", "-u", "1", "-r", "1",
         "-t", "60s", "--ws-url", f"ws://{server.target}/echo", "--image-kind", "serial",
         "--images", "3", "--results-dir", str(results), "--exit-code-on-error", "0"],
        cwd=procs.ROOT, env=procs.env(), capture_output=True, text=True, timeout=45,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["name"]: r for r in read_summary(results)}
    assert rows["serial msg"]["count"] == 3 and rows["serial msg"]["failures"] == 3
    errors = set(read_events(results).to_pandas()["error"].dropna())
    assert errors == {"not a STATS reply"}


@pytest.mark.timeout(120)
def test_short_s001_comparison(tmp_path: Path) -> None:
    out = tmp_path / "s001"
    proc = subprocess.run(
        [procs.PYTHON, "-m", "echoswarm", "sweep", IMAGES, "--images", "12", "--parallel", "4",
         "--cell-time", "25", "--out", str(out)],
        cwd=procs.ROOT, env=procs.env(), capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["reply"], r["kind"]) for r in rows) == [
        ("after", "parallel"),
        ("after", "serial"),
        ("before", "parallel"),
        ("before", "serial"),
    ]
    for r in rows:
        assert r["status"] == "done" and r["images"] == "12/12" and r["errors"] == "0", r
        assert float(r["total_s"]) > 0 and float(r["images_per_s"]) > 0
        assert 0 < float(r["image_p50_ms"]) <= float(r["image_p90_ms"]) <= float(r["image_p99_ms"])
        summary = {s["name"]: s for s in read_summary(Path(r["results"]))}
        if r["kind"] == "serial":
            assert summary["serial connect"]["count"] == 1
            assert summary["serial msg"]["count"] == 12
            assert summary["serial session"]["count"] == 1
        else:
            for phase in ("connect", "roundtrip", "session"):
                assert summary[f"parallel {phase}"]["count"] == 12
        assert sum(s["failures"] for s in summary.values()) == 0  # every reply checked and right
    text = (out / "sweep.md").read_text()
    for reply in ("after", "before"):
        assert f"- reply {reply}: throughput — " in text
        assert "; latency — " in text
    assert (out / "sweep.png").stat().st_size > 1000
    assert "| reply | kind |" in proc.stdout


def test_verdicts_say_who_wins_and_how_often() -> None:
    import pandas as pd

    from analysis.sweeps.images import verdicts

    rows = []
    for rep, (t_serial, t_parallel) in enumerate([(8.0, 6.0), (8.0, 9.0), (8.0, 7.0)], 1):
        for kind, total, p50 in (("serial", t_serial, 8.0), ("parallel", t_parallel, 300.0)):
            rows.append(
                {"reply": "after", "kind": kind, "rep": rep, "status": "done", "total_s": total,
                 "image_p50_ms": p50, "image_p99_ms": p50 * 2, "ok_images": 1000}
            )  # fmt: skip
    df = pd.DataFrame(rows)
    assert verdicts(df) == [
        "- reply after: throughput — parallel wins in 2 of 3 runs (median 7.00 s parallel vs "
        "8.00 s serial for 1000 images); latency — serial wins in 3 of 3 runs (median per-image "
        "p50 8.00 ms serial vs 300 ms parallel, p99 16.0 vs 600 ms)."
    ]
    df.loc[(df["rep"] == 1) & (df["kind"] == "parallel"), "status"] = "capped"
    assert "no winner (parallel ahead in 1 of 2 runs)" in verdicts(df)[0]
    df["status"] = "capped"
    assert verdicts(df) == ["- reply after: no verdict (no run with both kinds done: see status)."]
