"""S004 — CPU-bound work behind an HTTP API: inline in the request vs an rq job queue on Redis.

The target is ``python -m servers jobs``: an upload (a 16-bit PCM WAV) costs about
``--job-cpu-ms`` of pure-Python CPU on the server (its dominant frequency, found with Goertzel
filters). Each user uploads a tone of a frequency it chose at random and checks the answer
(within the server's ``resolution_hz``); a wrong answer is a failure that says so.

* ``InlineUpload`` — ``POST /stt/native``: the work runs inside the request. Row ``http native``
  (upload → answer).
* ``QueuedUpload`` — ``POST /stt/task`` (row ``http submit``), then ``GET /stt/task/{id}`` every
  ``--poll-interval-ms`` (rows ``http poll``) until the job is finished or failed. Derived rows:
  ``http job`` = submit → the poll that saw it finished (what the client waited), ``http queue
  wait`` = rq's started − enqueued, ``http run`` = rq's ended − started. A failed job, or one not
  finished within ``--job-deadline-s`` of its submit, is a failed ``job`` with the reason.

Knobs (Locust custom arguments, also in the web UI): ``--upload-mode inline|queued|both``
(start-up only), ``--uploads-per-user N`` (0 = until the test stops; with N the test ends by
itself once every user is done), ``--job-deadline-s``, ``--poll-interval-ms``,
``--tone-seconds``. The server address is Locust's own ``--host``.

The seed's comparison (inline vs 3 and 10 workers, 5 and 10 concurrent uploads, one cell each)::

    python -m echoswarm sweep locustfiles/job_queue.py --queue-workers 0,3,10 --uploads 5,10

One run (the orchestrator starts Redis, the API and the rq workers it declares below)::

    python -m echoswarm run locustfiles/job_queue.py -u 10 -r 10 -- --upload-mode queued \\
        --uploads-per-user 1
    locust -f locustfiles/job_queue.py --host http://127.0.0.1:8000     # own server, web UI

Spawn every user at once (``-r`` ≥ ``-u``) for "N concurrent uploads": while Locust ramps up,
early users would already be done.
"""

import locust  # noqa: F401,I001  (gevent monkey-patching first)

import io
import json
import logging
import math
import random
import uuid
import wave
from array import array
from datetime import datetime
from typing import Any

import gevent
from locust import FastHttpUser, events, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

from echoswarm.users import (
    LocustSink,
    Sample,
    Timer,
    end_test_when_users_done,
    next_conn_id,
    next_user_id,
    non_negative_int,
    positive_float,
)

end_test_when_users_done()

# The jobs server; a sweep cell overrides --queue-workers (0 = inline only) and --job-cpu-ms.
ECHOSWARM_SERVERS = [
    {"kind": "jobs", "option": "--host", "args": ["--queue-workers", "3"]},
]

MODES = ("inline", "queued", "both")
DEFAULTS = {
    "uploads_per_user": 0,
    "job_deadline_s": 120.0,
    "poll_interval_ms": 200.0,
    "tone_seconds": 1.0,
}
RATE = 16_000
LOW_HZ, HIGH_HZ = 200, 3000  # tones are chosen in here (inside the server's candidate grid)
TERMINAL = ("finished", "failed")

log = logging.getLogger("echoswarm.job_queue")


# -- the upload: a tone as a WAV in a multipart form (the client's own encoder) -----------------
def tone_wav(freq_hz: float, seconds: float, rate: int = RATE) -> bytes:
    frames = max(1, int(rate * seconds))
    step = 2.0 * math.pi * freq_hz / rate
    samples = array("h", (int(12_000 * math.sin(step * i)) for i in range(frames)))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())  # little-endian hosts; WAV is little-endian
    return out.getvalue()


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with one file part, and its Content-Type header."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{filename}"\r\nContent-Type: audio/wav\r\n\r\n'
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def check_result(result: Any, freq: int, seconds: float) -> str | None:
    """Why ``result`` is not the right answer for the tone sent (None if it is)."""
    if not isinstance(result, dict) or "dominant_hz" not in result:
        return f"no result in the reply: {str(result)[:120]}"
    try:
        got = float(result["dominant_hz"])
        tolerance = float(result.get("resolution_hz", 20.0))
        length = float(result.get("seconds", seconds))
    except (TypeError, ValueError):
        return f"malformed result: {str(result)[:120]}"
    if abs(got - freq) > tolerance:
        return f"wrong answer: {got:g} Hz for a {freq} Hz tone (resolution {tolerance:g} Hz)"
    if abs(length - seconds) > 0.01:
        return f"wrong length: {length:g} s for a {seconds:g} s tone"
    return None


def reply_json(resp: Any) -> tuple[Any, str | None]:
    """(decoded JSON body, None) or (None, why it could not be read)."""
    if getattr(resp, "error", None) is not None and not resp.status_code:
        return None, f"no response: {resp.error}"
    try:
        return json.loads(resp.content or b""), None
    except (ValueError, TypeError):
        return None, f"HTTP {resp.status_code}: not JSON: {(resp.text or '')[:120]!r}"


def timed_out(error: BaseException | None) -> bool:
    """A request cut off by the network timeout (geventhttpclient wraps it once)."""
    original = getattr(error, "original", None)
    return any(isinstance(e, TimeoutError | gevent.Timeout) for e in (error, original))


def status_problem(resp: Any, expected: int, body: Any) -> str | None:
    if resp.status_code == expected:
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    return f"HTTP {resp.status_code}: {detail or (resp.text or '')[:120]}"


def _iso_ns(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(stamp.timestamp() * 1_000_000) * 1000  # microseconds, as rq stores them


# -- options ------------------------------------------------------------------------------------
def _number(parsed: Any, name: str) -> float | None:
    """A numeric option, or None if it is not acceptable (the web UI's form skips argparse)."""
    value = getattr(parsed, name, None)
    value = DEFAULTS[name] if value is None else value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    low = 0 if name == "uploads_per_user" else 1e-9
    return number if number >= low and math.isfinite(number) else None


def _option(parsed: Any, name: str) -> float:
    """:func:`_number` for a user's ``on_start``: a bad value is logged and stops the user."""
    number = _number(parsed, name)
    if number is None:
        log.error("bad option --%s %r", name.replace("_", "-"), getattr(parsed, name, None))
        raise StopUser()
    return number


class _Uploader(FastHttpUser):
    """What both kinds share: options, the tone, the results sink, the upload count."""

    abstract = True
    upload_mode = ""
    connection_timeout = 10.0

    def __init__(self, environment: Any) -> None:
        parsed = environment.parsed_options
        # An inline upload may wait as long as a queued job may: the deadline bounds both.
        deadline = _number(parsed, "job_deadline_s")
        self.network_timeout = deadline or float(DEFAULTS["job_deadline_s"])
        super().__init__(environment)

    def on_start(self) -> None:
        parsed = self.environment.parsed_options
        self.remaining = int(_option(parsed, "uploads_per_user")) or -1  # -1: no limit
        self.deadline_s = _option(parsed, "job_deadline_s")
        self.poll_s = _option(parsed, "poll_interval_ms") / 1000.0
        self.seconds = _option(parsed, "tone_seconds")
        self.sink = LocustSink(self.environment)
        self.user_id = next_user_id()
        self.rng = random.Random()
        self.sent = 0

    @task
    def upload(self) -> None:
        if self.remaining == 0:
            raise StopUser()
        self.sent += 1
        freq = self.rng.randint(LOW_HZ, HIGH_HZ)
        body, headers = multipart("file", f"tone-{freq}hz.wav", tone_wav(freq, self.seconds))
        self.upload_once(freq, body, headers)
        if self.remaining > 0:
            self.remaining -= 1

    def upload_once(self, freq: int, body: bytes, headers: dict[str, str]) -> None:
        raise NotImplementedError

    def post(self, path: str, name: str, body: bytes, headers: dict[str, str]) -> Any:
        # FastHttpSession hands ``data`` to geventhttpclient, which sends bytes as they are.
        data: Any = body
        return self.client.post(path, data=data, headers=headers, name=name, catch_response=True)


class InlineUpload(_Uploader):
    """``POST /stt/native``: the answer comes in the response (row ``http native``)."""

    upload_mode = "inline"

    def upload_once(self, freq: int, body: bytes, headers: dict[str, str]) -> None:
        with self.post("/stt/native", "native", body, headers) as resp:
            resp.request_meta["request_type"] = "http"
            reply, problem = reply_json(resp)
            if timed_out(getattr(resp, "error", None)):
                problem = f"deadline: no answer within {self.deadline_s:g} s"
            problem = problem or status_problem(resp, 200, reply)
            if problem is None:
                problem = check_result(reply.get("result"), freq, self.seconds)
            if problem:
                resp.failure(problem)
            else:
                resp.success()


class QueuedUpload(_Uploader):
    """``POST /stt/task``, then poll ``GET /stt/task/{id}`` until finished or failed."""

    upload_mode = "queued"

    def upload_once(self, freq: int, body: bytes, headers: dict[str, str]) -> None:
        conn_id = next_conn_id()
        job = Timer()
        with self.post("/stt/task", "submit", body, headers) as resp:
            resp.request_meta["request_type"] = "http"
            reply, problem = reply_json(resp)
            problem = problem or status_problem(resp, 202, reply)
            job_id = reply.get("job_id") if isinstance(reply, dict) else None
            if problem is None and not isinstance(job_id, str):
                problem = f"no job_id in the reply: {str(reply)[:120]}"
            if problem:
                resp.failure(problem)
            else:
                resp.success()
        if problem or not isinstance(job_id, str):
            self._job(job, conn_id, f"submit failed: {problem}")
            return
        final, problem = self.wait_for_job(job_id, job)
        if problem is None and final is not None:
            if final["status"] == "failed":
                problem = f"job failed: {final.get('error') or 'no reason given'}"
            else:
                problem = check_result(final.get("result"), freq, self.seconds)
        self._job(job, conn_id, problem)
        if final is not None:
            self._rq_times(final, job, conn_id, failed=final["status"] == "failed")

    def wait_for_job(self, job_id: str, job: Timer) -> tuple[dict[str, Any] | None, str | None]:
        """Poll until the job is finished or failed, or the deadline passes."""
        last = "not polled yet"
        while True:
            with self.client.get(f"/stt/task/{job_id}", name="poll", catch_response=True) as resp:
                resp.request_meta["request_type"] = "http"
                reply, problem = reply_json(resp)
                problem = problem or status_problem(resp, 200, reply)
                if problem is None and (
                    not isinstance(reply, dict)
                    or reply.get("status") not in (*TERMINAL, "queued", "started")
                ):
                    problem = f"bad poll reply: {str(reply)[:120]}"
                if problem:
                    resp.failure(problem)
                    last = problem
                    if resp.status_code == 404:  # the job is gone: waiting longer cannot help
                        return None, f"job {job_id} vanished: {problem}"
                else:
                    resp.success()
                    last = f"status {reply['status']}"
                    if reply["status"] in TERMINAL:
                        return reply, None
            if job.elapsed_ns() + self.poll_s * 1e9 > self.deadline_s * 1e9:
                return None, f"deadline: not finished within {self.deadline_s:g} s ({last})"
            gevent.sleep(self.poll_s)

    def _job(self, job: Timer, conn_id: int, problem: str | None) -> None:
        self.sink(
            job.sample(
                "http", "job", error=problem, user_id=self.user_id, conn_id=conn_id, seq=self.sent
            )
        )

    def _rq_times(self, reply: dict[str, Any], job: Timer, conn_id: int, failed: bool) -> None:
        """``queue wait`` and ``run`` from rq's own timestamps (one clock: the server's)."""
        enqueued, started, ended = (
            _iso_ns(reply.get(k)) for k in ("enqueued_at", "started_at", "ended_at")
        )
        run_error = str(reply.get("error") or "job failed") if failed else None
        rows = [("queue wait", enqueued, started, None), ("run", started, ended, run_error)]
        for name, a, b, error in rows:
            if a is None or b is None:
                continue
            self.sink(
                Sample(
                    "http",
                    name,
                    start_ns=job.start_ns,  # placed at the submit on this host's timeline
                    latency_ns=max(0, b - a),
                    error=error,
                    user_id=self.user_id,
                    conn_id=conn_id,
                    seq=self.sent,
                )
            )


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    # Straight on the parser (not a group): Locust's web UI lists only those.
    parser.add_argument(
        "--upload-mode", choices=MODES, default="both", help="which users run (start-up only)"
    )
    parser.add_argument(
        "--uploads-per-user",
        type=non_negative_int,
        default=DEFAULTS["uploads_per_user"],
        help="uploads each user makes, then stops (0 = until the test stops)",
    )
    parser.add_argument(
        "--job-deadline-s",
        type=positive_float,
        default=DEFAULTS["job_deadline_s"],
        help="a job (or inline upload) not answered within this is a failure",
    )
    parser.add_argument(
        "--poll-interval-ms",
        type=positive_float,
        default=DEFAULTS["poll_interval_ms"],
        help="queued uploads: time between polls of the job",
    )
    parser.add_argument(
        "--tone-seconds",
        type=positive_float,
        default=DEFAULTS["tone_seconds"],
        help="length of the uploaded tone (16 kHz mono, 32 KB per second)",
    )


@events.init.add_listener
def _select_mode(environment: Any, **_kw: Any) -> None:
    mode = getattr(environment.parsed_options, "upload_mode", "both")
    if mode == "both" or isinstance(environment.runner, WorkerRunner):
        return  # the master decides what runs; a worker must know every class
    environment.user_classes[:] = [
        c for c in environment.user_classes if getattr(c, "upload_mode", mode) == mode
    ]
