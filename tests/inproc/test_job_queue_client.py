"""The S004 users' own pieces (``locustfiles/job_queue.py``): the tone they upload, the form
that carries it, and how an answer is judged — checked against independent implementations
(the server's WAV decoder, python-multipart's parser)."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from types import ModuleType

import pytest
import python_multipart

from servers.jobs.audio import analyze, decode_wav

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client() -> ModuleType:
    spec = importlib.util.spec_from_file_location("job_queue", ROOT / "locustfiles/job_queue.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_users_tone_is_a_wav_the_server_reads_at_its_frequency(client: ModuleType) -> None:
    data = client.tone_wav(1230, 0.5)
    audio = decode_wav(data)
    assert (audio.rate, audio.channels, len(audio.samples)) == (16_000, 1, 8_000)
    result = analyze(data, 3)
    assert result["dominant_hz"] == 1240.0  # within the 20 Hz grid
    assert client.check_result(result, 1230, 0.5) is None


def test_the_multipart_form_parses_back_to_the_file(client: ModuleType) -> None:
    payload = client.tone_wav(440, 0.1)
    body, headers = client.multipart("file", "tone.wav", payload)
    files: list[tuple[bytes | None, bytes | None, bytes]] = []

    def on_file(f: python_multipart.multipart.File) -> None:
        f.file_object.seek(0)
        files.append((f.field_name, f.file_name, f.file_object.read()))

    python_multipart.parse_form(
        {
            "Content-Type": headers["Content-Type"].encode(),
            "Content-Length": str(len(body)).encode(),
        },
        io.BytesIO(body),
        None,
        on_file,
    )
    assert files == [(b"file", b"tone.wav", payload)]


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        ({"dominant_hz": 1000.0, "resolution_hz": 20.0, "seconds": 1.0}, None),
        ({"dominant_hz": 1020.0, "resolution_hz": 20.0, "seconds": 1.0}, None),
        (
            {"dominant_hz": 1040.0, "resolution_hz": 20.0, "seconds": 1.0},
            "wrong answer: 1040 Hz for a 1000 Hz tone (resolution 20 Hz)",
        ),
        ({"dominant_hz": 1000.0, "seconds": 2.0}, "wrong length: 2 s for a 1 s tone"),
        ({"seconds": 1.0}, "no result in the reply: {'seconds': 1.0}"),
        (None, "no result in the reply: None"),
        ({"dominant_hz": "loud"}, "malformed result: {'dominant_hz': 'loud'}"),
    ],
)
def test_an_answer_is_checked_against_the_tone_sent(
    client: ModuleType, result: object, problem: str | None
) -> None:
    assert client.check_result(result, 1000, 1.0) == problem


def test_a_request_cut_off_by_the_network_timeout_is_told_apart(client: ModuleType) -> None:
    import gevent
    from geventhttpclient.useragent import RetriesExceeded

    # socket.timeout is TimeoutError; gevent's own Timeout is not an Exception at all.
    assert client.timed_out(RetriesExceeded("http://x/", 0, original=TimeoutError("timed out")))
    assert client.timed_out(RetriesExceeded("http://x/", 0, original=gevent.Timeout(1)))
    assert not client.timed_out(RetriesExceeded("http://x/", 0, original=ConnectionRefusedError()))
    assert not client.timed_out(None)
