"""``python -m servers jobs`` (seed S004) with a real Redis and real rq workers: the API, every
bad input, a job over its timeout, killed work horses and workers, Redis going away and coming
back, and that every child stops with the server — also when it is SIGKILLed."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from servers.jobs.audio import tone_wav
from tests import procs
from tests.conftest import require_tool
from tests.fakes.runs import local_run

CPU_MS = "20"  # per job: enough to be real work, small enough for a fast suite
LIMIT = 200_000  # --max-upload-bytes of the shared server
WAV = tone_wav(440.0)
JOB_QUEUE = "locustfiles/job_queue.py"


# -- helpers ------------------------------------------------------------------------------------
def base(p: procs.Proc) -> str:
    return f"http://{p.target}"


def upload(url: str, data: bytes, *, field: str = "file", timeout: float = 30) -> requests.Response:
    return requests.post(url, files={field: ("tone.wav", data, "audio/wav")}, timeout=timeout)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy (a condition with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.02)


def job_state(server: str, job_id: str) -> dict[str, Any]:
    r = requests.get(f"{server}/stt/task/{job_id}", timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_job(server: str, job_id: str, states: tuple[str, ...], timeout: float = 30) -> dict:
    return dict(
        wait_for(
            lambda: (s := job_state(server, job_id))["status"] in states and s,
            timeout,
            f"job {job_id} {'/'.join(states)}",
        )
    )


def submit(server: str, data: bytes = WAV) -> str:
    r = upload(f"{server}/stt/task", data)
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def worker_procs(server: procs.Proc) -> list[psutil.Process]:
    """The server's rq worker processes (its children running servers.jobs.worker)."""
    out = []
    for child in psutil.Process(server.pid).children():
        try:
            if "servers.jobs.worker" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:
            continue
    return out


def horse_of(worker: psutil.Process) -> psutil.Process | None:
    """The work horse a worker forked for its job: rq puts it in a process group of its own
    (the worker's other child, the scheduler, stays in the worker's group)."""
    for child in worker.children():
        try:
            if os.getpgid(child.pid) == child.pid:
                return child
        except ProcessLookupError:
            continue
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gone(pids: list[int]) -> bool:
    return not [p for p in pids if psutil.pid_exists(p) and _alive(p)]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[procs.Proc, Path]]:
    """One server for the API and bad-input tests: 2 workers, own Redis, small uploads."""
    require_tool("redis-server")
    tmp = tmp_path_factory.mktemp("jobs-api")
    uploads = tmp / "uploads"
    p = procs.server(
        "jobs",
        "--queue-workers", "2",
        "--job-cpu-ms", CPU_MS,
        "--max-upload-bytes", str(LIMIT),
        "--upload-dir", str(uploads),
        "--cleanup-after-s", "2",  # rq schedules in whole seconds: 1-2 s
        tmp_path=tmp,
    )  # fmt: skip
    yield p, uploads
    # SIGTERM: exit 0, and Redis, the workers and their scheduler are gone with the server.
    family = _family(p)
    assert len(family) >= 4, family  # redis-server, 2 workers, the scheduler
    assert p.stop() == 0, p.stderr_text()
    wait_for(lambda: gone(family), 15, "every child gone after SIGTERM")


# -- the API ------------------------------------------------------------------------------------
def test_inline_and_queued_uploads_answer_the_tone(api: tuple[procs.Proc, Path]) -> None:
    server = base(api[0])
    inline = upload(f"{server}/stt/native", tone_wav(1234.0))
    assert inline.status_code == 200, inline.text
    body = inline.json()
    assert set(body) == {"job_id", "result"}
    assert body["result"]["dominant_hz"] == 1240.0  # the 20 Hz grid's nearest candidate
    assert body["result"]["seconds"] == 1.0

    queued = upload(f"{server}/stt/task", tone_wav(2500.0))
    assert queued.status_code == 202, queued.text
    ids = queued.json()
    assert set(ids) == {"job_id", "file_id"} and re.fullmatch(r"[0-9a-f]{32}", ids["file_id"])
    done = wait_job(server, ids["job_id"], ("finished",))
    assert done["result"]["dominant_hz"] == 2500.0
    assert done["result"]["passes"] == body["result"]["passes"]  # the same work both ways
    assert "error" not in done
    times = [datetime.fromisoformat(done[k]) for k in ("enqueued_at", "started_at", "ended_at")]
    assert times == sorted(times)

    health = requests.get(f"{server}/health", timeout=10).json()
    assert health["queue"] == "ok" and health["workers"] == 2


def test_poll_of_an_unknown_job_is_404(api: tuple[procs.Proc, Path]) -> None:
    server = base(api[0])
    for job_id in (uuid.uuid4().hex, "no:such:job", "x" * 200):
        r = requests.get(f"{server}/stt/task/{job_id}", timeout=10)
        assert r.status_code == 404, (job_id, r.text)
        assert r.json()["detail"].startswith("no job ")
    assert requests.get(f"{server}/stt/native", timeout=10).status_code == 405
    assert requests.get(f"{server}/nowhere", timeout=10).json() == {"detail": "no route /nowhere"}


def test_upload_is_saved_for_the_workers_then_deleted_by_the_cleanup_job(
    api: tuple[procs.Proc, Path],
) -> None:
    server, uploads = base(api[0]), api[1]
    r = upload(f"{server}/stt/task", WAV)
    assert r.status_code == 202
    saved = uploads / f"{r.json()['file_id']}.wav"
    assert saved.read_bytes() == WAV  # right after the 202: the cleanup is >= 1 s later
    wait_for(lambda: not saved.exists(), 20, "the scheduled cleanup job deleting the upload")
    assert wait_job(server, r.json()["job_id"], ("finished",))["status"] == "finished"


def _eight_bit() -> bytes:
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * 4000)
    return out.getvalue()


@pytest.mark.parametrize("path", ["/stt/native", "/stt/task"])
def test_bad_uploads_are_422_with_the_reason(api: tuple[procs.Proc, Path], path: str) -> None:
    url = base(api[0]) + path
    cases: list[tuple[Callable[[], requests.Response], str]] = [
        (lambda: requests.post(url, timeout=10), "no file: the multipart field 'file' is missing"),
        (lambda: upload(url, WAV, field="audio"), "no file: the multipart field 'file' is missing"),
        (
            lambda: requests.post(url, data={"file": "not a file"}, timeout=10),
            "no file: the multipart field 'file' is a plain field, not a file",
        ),
        (lambda: upload(url, b"I am text, not audio\n"), "not a WAV file (no RIFF/WAVE header)"),
        (
            lambda: upload(url, WAV[:3000]),
            "truncated WAV: the header promises 16000 frames, the data holds 1478",
        ),
        (lambda: upload(url, _eight_bit()), "only 16-bit PCM is supported (this file has 8-bit)"),
        (lambda: upload(url, b""), "empty file"),
        (
            lambda: requests.post(
                url,
                data=b"--xyz\r\nContent-Disposition: form-data; name=file\r\n\r\nabc",
                headers={"Content-Type": "multipart/form-data"},  # no boundary
                timeout=10,
            ),
            "malformed multipart form: Missing boundary in multipart.",
        ),
    ]
    for send, reason in cases:
        r = send()
        assert r.status_code == 422, (reason, r.status_code, r.text)
        assert r.json()["detail"].startswith(reason), r.text


def test_oversized_upload_is_413_without_reading_it(api: tuple[procs.Proc, Path]) -> None:
    p = api[0]
    # Declared too large: answered from the headers alone (50 MB are never sent).
    head = (
        f"POST /stt/task HTTP/1.1\r\nHost: {p.target}\r\nContent-Length: 50000000\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
    ).encode()
    with socket.create_connection((p.host, p.port), timeout=10) as s:
        s.sendall(head)
        reply = procs.read_http_head(s, timeout=10)
        assert reply.startswith(b"HTTP/1.1 413 "), reply
        assert b"connection: close" in reply.lower()
    # Chunked (no length): refused as soon as the body passes the limit, long before its end.
    with socket.create_connection((p.host, p.port), timeout=10) as s:
        s.sendall(
            f"POST /stt/native HTTP/1.1\r\nHost: {p.target}\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode()
        )
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        chunks = iter([part, *([b"x" * 65_536] * 300)])  # bounded: 20 MB at most
        sent = 0
        try:
            for chunk in chunks:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                s.settimeout(0.0)
                try:
                    if s.recv(1, socket.MSG_PEEK):
                        break  # the answer has come
                except BlockingIOError:
                    pass
                finally:
                    s.settimeout(10)
        except OSError:
            pass  # the server closed while we were still sending: expected
        assert sent < 50 * LIMIT
        reply = procs.read_http_head(s, timeout=10)
        assert reply.startswith(b"HTTP/1.1 413 "), reply
    r = upload(f"{base(p)}/stt/native", tone_wav(440.0, seconds=LIMIT / 32_000 + 1))
    assert r.status_code == 413
    assert r.json()["detail"] == f"upload larger than --max-upload-bytes {LIMIT}"


# -- faults -------------------------------------------------------------------------------------
def test_failed_late_and_killed_jobs_end_failed_with_the_reason_and_no_child_is_left(
    start_server: Callable[..., procs.Proc],
) -> None:
    """One server with slow jobs (6 s of CPU, 2 s job timeout, one worker), then its children
    killed one after another — each a separate recovery."""
    require_tool("redis-server")
    p = start_server(
        "jobs", "--queue-workers", "1", "--job-cpu-ms", "6000", "--job-timeout-s", "2",
        "--grace-s", "1",
    )  # fmt: skip
    server = base(p)
    # 0. Through the locustfile's users: job 1 runs into the 2 s job timeout; job 2 waits
    # behind it, so it cannot end before 4 s: the client's 3.2 s deadline fails it.
    r = local_run(
        JOB_QUEUE, 2, 4.0,
        "--host", server, "--upload-mode", "queued", "--uploads-per-user", "1",
        "--job-deadline-s", "3.2", "--poll-interval-ms", "50",
        classes="QueuedUpload",
    )  # fmt: skip
    assert r.errors == 0, r.stderr
    jobs = r.rows("http", "job")
    assert len(jobs) == 2 and all(j.error for j in jobs), jobs
    errors = sorted(str(j.error) for j in jobs)
    assert re.fullmatch(
        r"deadline: not finished within 3.2 s \(status (queued|started)\)", errors[0]
    ), errors
    assert errors[1].startswith("job failed: ") and "JobTimeoutException" in errors[1], errors
    assert "(2 seconds)" in errors[1]
    (run,) = r.rows("http", "run")  # only the job that ended has rq's run time
    assert run.error == errors[1].removeprefix("job failed: ")
    assert 1.9e9 <= run.latency_ns < 4e9  # cut at the timeout, not after the whole 6 s job
    assert r.stats["http submit"] == {"count": 2, "failures": 0}
    assert r.stats["http poll"]["count"] >= 4 and r.stats["http poll"]["failures"] == 0
    # 1. The work horse (the process running the job) is killed: rq's worker fails the job.
    job = submit(server)
    wait_job(server, job, ("started",))  # so job 2 is over: one worker
    (worker,) = worker_procs(p)
    horse = wait_for(lambda: horse_of(worker), 10, "the work horse")
    horse.kill()
    failed = wait_job(server, job, ("failed",), timeout=20)
    assert "Work-horse terminated unexpectedly" in failed["error"], failed
    assert failed["ended_at"] is not None
    # 2. The worker itself is killed mid-job: the server fails the job and replaces the worker;
    # the work horse dies with its worker.
    job = submit(server)
    wait_job(server, job, ("started",))
    horse = wait_for(lambda: horse_of(worker), 10, "the second work horse")
    worker.kill()
    failed = wait_job(server, job, ("failed",), timeout=20)
    assert re.search(
        r"rq worker \S+ \(pid \d+\) died while running this job \(killed by SIGKILL\)",
        failed["error"],
    ), failed
    assert failed["ended_at"] is not None
    wait_for(lambda: gone([horse.pid]), 10, "the dead worker's work horse to die with it")
    (fresh,) = wait_for(
        lambda: [w for w in worker_procs(p) if w.pid != worker.pid], 20, "a replacement worker"
    )
    # 3. Our own Redis dies: it is restarted (empty) and the queue works again.
    (redis_child,) = [c for c in psutil.Process(p.pid).children() if "redis" in c.name()]
    redis_child.kill()
    job = wait_for(
        lambda: (r := upload(f"{server}/stt/task", WAV)).status_code == 202 and r.json()["job_id"],
        20,
        "submits to be accepted again after Redis restarted",
    )
    wait_job(server, job, ("started",), timeout=30)  # the replacement worker runs it
    # 4. The server is SIGKILLed mid-job: Redis, the worker, its scheduler and work horse go too.
    family = _family(p)
    assert len(family) >= 4, family
    assert p.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_for(lambda: gone(family), 15, "every child gone after the server's SIGKILL")


def _family(p: procs.Proc) -> list[int]:
    return [c.pid for c in psutil.Process(p.pid).children(recursive=True)]


def _start_redis(tmp_path: Path, port: int) -> procs.Proc:
    binary = require_tool("redis-server")
    p = procs.start(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        tmp_path=tmp_path,
        wait_listening=False,
    )
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=1)
    wait_for(lambda: _pings(client), 10, "redis-server to answer")
    return p


def _pings(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_redis_gone_is_503_and_the_api_recovers_when_it_is_back(
    start_server: Callable[..., procs.Proc], tmp_path: Path
) -> None:
    port = free_port()
    redis_proc = _start_redis(tmp_path / "redis-1", port)
    try:
        p = start_server(
            "jobs", "--queue-workers", "1", "--job-cpu-ms", CPU_MS,
            "--redis-url", f"redis://127.0.0.1:{port}/0", "--grace-s", "1",
        )  # fmt: skip
        server = base(p)
        before = submit(server)
        wait_job(server, before, ("finished",))
        redis_proc.stop(signal.SIGKILL)

        r = upload(f"{server}/stt/task", WAV)
        assert r.status_code == 503, r.text
        assert r.json()["detail"].startswith(
            f"job queue unavailable: Redis at redis://127.0.0.1:{port}/0 cannot be reached"
        )
        assert requests.get(f"{server}/stt/task/{before}", timeout=10).status_code == 503
        assert upload(f"{server}/stt/native", WAV).status_code == 200  # the API stays up
        assert "cannot be reached" in requests.get(f"{server}/health", timeout=10).json()["queue"]

        redis_proc = _start_redis(tmp_path / "redis-2", port)  # back, empty
        job = wait_for(
            lambda: (r := upload(f"{server}/stt/task", WAV)).status_code == 202 and r.json(),
            20,
            "submits to be accepted again",
        )
        done = wait_job(server, job["job_id"], ("finished",), timeout=40)
        assert done["result"]["dominant_hz"] == 440.0
    finally:
        redis_proc.stop(signal.SIGKILL)


def test_inline_only_has_no_redis_no_workers_and_says_the_queue_is_off(
    start_server: Callable[..., procs.Proc],
) -> None:
    p = start_server("jobs", "--queue-workers", "0", "--job-cpu-ms", CPU_MS)
    assert psutil.Process(p.pid).children() == []
    server = base(p)
    assert upload(f"{server}/stt/native", WAV).json()["result"]["dominant_hz"] == 440.0
    r = upload(f"{server}/stt/task", WAV)
    assert r.status_code == 503 and "the job queue is off (--queue-workers 0)" in r.text
    assert requests.get(f"{server}/stt/task/abc", timeout=10).status_code == 503
    assert requests.get(f"{server}/health", timeout=10).json()["queue"] == "off"


def test_sigterm_during_an_inline_job_answers_503_and_exits_within_the_grace(
    start_server: Callable[..., procs.Proc],
) -> None:
    import threading

    p = start_server("jobs", "--queue-workers", "0", "--job-cpu-ms", "20000", "--grace-s", "0.5")
    server = psutil.Process(p.pid)
    idle_threads = server.num_threads()
    replies: list[requests.Response] = []
    client = threading.Thread(
        target=lambda: replies.append(upload(f"{base(p)}/stt/native", WAV)), daemon=True
    )
    client.start()
    wait_for(lambda: server.num_threads() > idle_threads, 10, "the inline job's thread")
    start = time.monotonic()
    assert p.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - start < 5  # not the 20 s the job would take
    client.join(timeout=10)
    assert replies and replies[0].status_code == 503
    assert replies[0].json()["detail"] == "server shutting down: the job was abandoned"


# -- start-up ------------------------------------------------------------------------------------
def test_the_listening_line_comes_first_once_ready(api: tuple[procs.Proc, Path]) -> None:
    p = api[0]
    assert p.first_line == f"LISTENING jobs 127.0.0.1:{p.port}"
    # Ready means ready: both workers had registered before the line was printed.
    assert requests.get(f"{base(p)}/health", timeout=10).json()["workers"] == 2


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``python -m servers jobs ARGV`` in this process; its one stderr line (exit 2)."""
    from servers.__main__ import main

    try:
        code = main(["jobs", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    assert code == 2 and out.out == "", out
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queue-workers", "-1"], "argument --queue-workers: -1 must be >= 0"),
        (["--redis-url", "http://x"], "--redis-url 'http://x': expected redis://"),
        (["--redis-url", "redis://127.0.0.1:1", "--queue-workers", "0"], "--redis-url needs"),
        (["--job-cpu-ms", "lots"], "argument --job-cpu-ms: 'lots' is not a number"),
        (["--max-upload-bytes", "0"], "argument --max-upload-bytes: 0 must be >= 1"),
        (["--upload-dir", "/proc/version/x"], "--upload-dir /proc/version/x:"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in _usage_error(["--port", "0", *args], capsys)


def test_missing_redis_server_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server on this PATH
    assert _usage_error(["--port", "0", "--queue-workers", "1"], capsys) == (
        "python -m servers jobs: error: redis-server not found on PATH: install it "
        "(Debian: apt-get install redis-server) or pass --redis-url"
    )


def test_port_in_use_is_one_line_exit_2(
    api: tuple[procs.Proc, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    taken = api[0].port
    assert _usage_error(["--port", str(taken), "--queue-workers", "0"], capsys) == (
        f"python -m servers jobs: error: port {taken} on 127.0.0.1 is already in use"
    )
