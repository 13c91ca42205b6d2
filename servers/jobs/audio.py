"""The job's work: decode a 16-bit PCM WAV and find its dominant frequency, in pure Python.

Seed S004 ran speech recognition (~11.5 s of CPU per upload) inside the request handler or in
an rq worker. Here the CPU-bound part is honest, checkable work of the same nature: Goertzel
filters over a grid of candidate frequencies, summed over blocks of the clip, in a plain Python
loop that holds the GIL the whole time (as the seed's recognizer did). The answer is the
candidate with the most energy, so a client that uploads a tone of a frequency it chose can
check it.

The amount of work per upload is a number of *passes* (one pass = every candidate over one
block of ``BLOCK`` samples). :func:`calibrate` measures a pass once at start-up so that
``--job-cpu-ms`` becomes a fixed number of passes: every upload then costs the same fixed work,
whichever process (request thread or rq work horse) does it. Everything here is sans-I/O: bytes
in, a dict out; the inline endpoint and the rq job call the same :func:`analyze`.
"""

from __future__ import annotations

import io
import math
import struct
import sys
import time
import wave
from array import array
from dataclasses import dataclass

BLOCK = 512  # samples per Goertzel block (32 ms at 16 kHz: ~31 Hz bins)
STEP_HZ = 20.0  # candidate grid spacing: the answer's resolution
LOW_HZ = 100.0
HIGH_HZ = 4000.0
MIN_RATE = 2000
MAX_RATE = 384_000


class BadAudio(ValueError):
    """The upload is not a usable 16-bit PCM WAV; the message is the one-line reason."""


@dataclass(frozen=True)
class Audio:
    """A decoded clip: channel 0 as signed 16-bit samples."""

    rate: int
    channels: int
    samples: array  # array('h')

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def decode_wav(data: bytes) -> Audio:
    """Parse ``data`` as a 16-bit PCM WAV (any channel count; channel 0 is analysed)."""
    if not data:
        raise BadAudio("empty file")
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise BadAudio("not a WAV file (no RIFF/WAVE header)")
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            width, channels, rate, frames = (
                w.getsampwidth(),
                w.getnchannels(),
                w.getframerate(),
                w.getnframes(),
            )
            if width != 2:
                raise BadAudio(f"only 16-bit PCM is supported (this file has {8 * width}-bit)")
            if not MIN_RATE <= rate <= MAX_RATE:
                raise BadAudio(f"sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE}")
            raw = w.readframes(frames)
    except BadAudio:
        raise
    except EOFError:
        raise BadAudio("corrupt WAV file (it ends inside its header)") from None
    except (wave.Error, struct.error, ValueError, OverflowError) as exc:
        reason = str(exc) or type(exc).__name__
        raise BadAudio(f"corrupt WAV file ({reason})") from None
    frame_bytes = width * channels
    got = len(raw) // frame_bytes
    if frames == 0 or got == 0:
        raise BadAudio("the WAV file holds no audio frames")
    if got < frames:
        raise BadAudio(f"truncated WAV: the header promises {frames} frames, the data holds {got}")
    if got < BLOCK:
        raise BadAudio(f"too short: {got} frames, at least {BLOCK} are needed")
    samples = array("h")
    samples.frombytes(raw[: got * frame_bytes])
    if sys.byteorder == "big":
        samples.byteswap()  # WAV is little-endian
    if channels > 1:
        samples = samples[::channels]
    return Audio(rate, channels, samples)


def candidates(rate: int) -> list[float]:
    """The frequencies tried: LOW_HZ..HIGH_HZ every STEP_HZ, below the Nyquist frequency."""
    top = min(HIGH_HZ, rate / 2 - STEP_HZ)
    count = int((top - LOW_HZ) // STEP_HZ) + 1
    return [LOW_HZ + i * STEP_HZ for i in range(max(count, 1))]


def _goertzel_power(block: array, coeff: float) -> float:
    """Energy of ``block`` at the frequency whose Goertzel coefficient is ``coeff``."""
    s1 = s2 = 0.0
    for x in block:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def dominant(audio: Audio, passes: int) -> dict[str, float | int]:
    """The candidate frequency with the most energy, over ``passes`` blocks of the clip.

    Pass *p* analyses block ``p mod blocks`` (cycling through the clip), so more passes is more
    work on the same data and never changes what a pure tone's answer is.
    """
    freqs = candidates(audio.rate)
    coeffs = [2.0 * math.cos(2.0 * math.pi * f / audio.rate) for f in freqs]
    totals = [0.0] * len(freqs)
    blocks = len(audio.samples) // BLOCK
    for p in range(max(1, passes)):
        start = (p % blocks) * BLOCK
        block = audio.samples[start : start + BLOCK]
        for k, coeff in enumerate(coeffs):
            totals[k] += _goertzel_power(block, coeff)
    best = max(range(len(freqs)), key=totals.__getitem__)
    return {
        "dominant_hz": freqs[best],
        "seconds": round(audio.seconds, 6),
        "sample_rate": audio.rate,
        "channels": audio.channels,
        "resolution_hz": STEP_HZ,
        "passes": max(1, passes),
    }


def analyze(data: bytes, passes: int) -> dict[str, float | int]:
    """The job: WAV bytes → ``{"dominant_hz", "seconds", ..., "cpu_ms"}`` (raises
    :class:`BadAudio`). ``cpu_ms`` is the CPU time this thread spent on it: against the wall
    time it shows how much of a core the job really had."""
    t0 = time.thread_time_ns()
    result = dominant(decode_wav(data), passes)
    result["cpu_ms"] = round((time.thread_time_ns() - t0) / 1e6, 3)
    return result


def tone_wav(
    freq_hz: float, *, rate: int = 16_000, seconds: float = 1.0, channels: int = 1
) -> bytes:
    """A 16-bit PCM WAV of a pure tone at half scale (tests and calibration)."""
    frames = int(rate * seconds)
    one = [int(16_000 * math.sin(2.0 * math.pi * freq_hz * i / rate)) for i in range(frames)]
    samples = array("h", [v for v in one for _ in range(channels)])
    if sys.byteorder == "big":
        samples.byteswap()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def calibrate(cpu_ms: float, budget_ms: float = 150.0) -> tuple[int, float]:
    """(passes per job, measured CPU ms per pass) so that a job costs about ``cpu_ms`` of CPU.

    Measured as this thread's CPU time (not wall time), so a busy machine at start-up does not
    shrink every job. Costs about ``budget_ms`` once.
    """
    audio = decode_wav(tone_wav(1000.0, seconds=0.2))
    dominant(audio, 1)  # warm up
    passes, spent_ns = 1, 0
    while True:
        t0 = time.thread_time_ns()
        dominant(audio, passes)
        spent_ns = time.thread_time_ns() - t0
        if spent_ns >= budget_ms * 1e6 or spent_ns >= cpu_ms * 1e6 or passes >= 1 << 16:
            break
        passes *= 2
    per_pass_ms = max(spent_ns / 1e6 / passes, 1e-3)
    return max(1, round(cpu_ms / per_pass_ms)), per_pass_ms
