"""S004's job without sockets: WAV decoding, its errors, the dominant frequency, calibration."""

from __future__ import annotations

import io
import wave

import pytest

from servers.jobs import audio
from servers.jobs.audio import BadAudio, analyze, tone_wav


@pytest.mark.parametrize(
    ("freq", "rate", "channels"),
    [(440.0, 16_000, 1), (1234.0, 16_000, 1), (2980.0, 44_100, 2), (150.0, 8_000, 1)],
)
def test_dominant_frequency_of_a_tone_is_found_within_the_grid_step(
    freq: float, rate: int, channels: int
) -> None:
    result = analyze(tone_wav(freq, rate=rate, seconds=0.5, channels=channels), passes=6)
    assert abs(float(result["dominant_hz"]) - freq) <= audio.STEP_HZ / 2
    assert result["seconds"] == 0.5
    assert result["sample_rate"] == rate and result["channels"] == channels
    assert result["resolution_hz"] == audio.STEP_HZ and result["passes"] == 6


def test_more_passes_is_more_work_on_the_same_answer() -> None:
    data = tone_wav(700.0)
    assert analyze(data, 1)["dominant_hz"] == analyze(data, 40)["dominant_hz"] == 700.0
    assert analyze(data, 0)["passes"] == 1  # at least one pass


def _wav(width: int = 2, rate: int = 16_000, frames: bytes = b"\x00\x00" * 600) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


GOOD = tone_wav(500.0)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am a text file\n", "not a WAV file (no RIFF/WAVE header)"),
        (GOOD[:30], "corrupt WAV file (it ends inside its header)"),
        (GOOD[:44], "the WAV file holds no audio frames"),
        (GOOD[:2000], "truncated WAV: the header promises 16000 frames, the data holds 978"),
        (GOOD.replace(b"fmt ", b"fmx "), "corrupt WAV file (data chunk before fmt chunk)"),
        (_wav(width=1, frames=b"\x80" * 600), "only 16-bit PCM is supported (this file has 8-bit)"),
        (_wav(rate=1000), "sample rate 1000 Hz is outside 2000..384000"),
        (_wav(frames=b"\x00\x00" * 100), "too short: 100 frames, at least 512 are needed"),
    ],
)
def test_bad_uploads_are_refused_with_one_line(data: bytes, reason: str) -> None:
    with pytest.raises(BadAudio) as info:
        analyze(data, 1)
    assert str(info.value) == reason


def test_calibration_turns_cpu_ms_into_passes() -> None:
    passes, per_pass_ms = audio.calibrate(200.0, budget_ms=30.0)
    assert per_pass_ms > 0
    assert passes == max(1, round(200.0 / per_pass_ms))
    assert audio.calibrate(0.0, budget_ms=5.0)[0] == 1
