"""The rq side of the jobs server: enqueue an upload, report a job, fail a dead worker's job.

Everything the API and the supervisor do with Redis goes through here, and every Redis failure
(refused, timed out, reset, still loading) becomes :class:`QueueUnavailable` with one line that
says which Redis could not be reached — the API answers 503 with it and keeps serving; the
next request tries again, so the API recovers by itself when Redis is back.

The seed's rq settings are kept: a job timeout, result and failure TTLs, and a cleanup job for
the saved upload scheduled with ``enqueue_in`` (run by the workers' scheduler).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.utils import now

from servers.jobs.tasks import analyze_upload, delete_upload

log = logging.getLogger("servers.jobs")

QUEUE_NAME = "echoswarm-stt"
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# rq's own states folded into the four the API reports.
STATUS = {
    JobStatus.QUEUED: "queued",
    JobStatus.DEFERRED: "queued",
    JobStatus.SCHEDULED: "queued",
    JobStatus.CREATED: "queued",
    JobStatus.STARTED: "started",
    JobStatus.FINISHED: "finished",
    JobStatus.FAILED: "failed",
    JobStatus.STOPPED: "failed",
    JobStatus.CANCELED: "failed",
}


class QueueUnavailable(Exception):
    """Redis cannot be reached or refused the command (one line; the API answers 503)."""


@dataclass(frozen=True)
class QueueSettings:
    job_timeout_s: int = 300
    result_ttl_s: int = 600
    failure_ttl_s: int = 600
    cleanup_after_s: float = 60.0


def connect(url: str) -> redis.Redis:
    """A Redis client that fails fast (the API must answer 503 quickly, not hang)."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=2.0, socket_timeout=5.0, health_check_interval=10
    )


def shown_url(url: str) -> str:
    """The URL without a password, for messages."""
    return re.sub(r"//[^@/]*@", "//***@", url)


class JobQueue:
    """The API's handle on the queue (thread-safe: redis-py's client holds a connection pool)."""

    def __init__(self, url: str, settings: QueueSettings) -> None:
        self.url = url
        self.settings = settings
        self.redis = connect(url)
        self.queue = Queue(QUEUE_NAME, connection=self.redis)

    def _unavailable(self, exc: Exception) -> QueueUnavailable:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return QueueUnavailable(
            f"job queue unavailable: Redis at {shown_url(self.url)} cannot be reached ({reason})"
        )

    def ping(self) -> None:
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise self._unavailable(exc) from None

    def workers(self) -> int:
        """rq workers registered on the queue."""
        try:
            return int(Worker.count(queue=self.queue))
        except redis.RedisError as exc:
            raise self._unavailable(exc) from None

    def submit(self, path: str, passes: int) -> str:
        """Enqueue the analysis of the saved upload, and its cleanup later; the job id."""
        s = self.settings
        try:
            job = self.queue.enqueue(
                analyze_upload,
                path,
                passes,
                job_timeout=s.job_timeout_s,
                result_ttl=s.result_ttl_s,
                failure_ttl=s.failure_ttl_s,
                description=f"dominant frequency of {path.rsplit('/', 1)[-1]}",
            )
            self.queue.enqueue_in(
                timedelta(seconds=s.cleanup_after_s),
                delete_upload,
                path,
                result_ttl=0,
                failure_ttl=s.failure_ttl_s,
                description=f"delete upload {path.rsplit('/', 1)[-1]}",
            )
        except redis.RedisError as exc:
            raise self._unavailable(exc) from None
        return str(job.id)

    def status(self, job_id: str) -> dict[str, Any] | None:
        """The poll reply for ``job_id`` (None: no such job, or it expired after its TTL)."""
        if not JOB_ID_RE.match(job_id):
            return None
        try:
            try:
                job = Job.fetch(job_id, connection=self.redis)
            except NoSuchJobError:
                return None
            rq_status = job.get_status(refresh=False)
            state = STATUS.get(rq_status, "queued") if rq_status else "queued"
            reply: dict[str, Any] = {"job_id": job.id, "status": state}
            if state == "finished":
                reply["result"] = job.return_value()
            elif state == "failed":
                reply["error"] = failure_reason(job, rq_status)
        except redis.RedisError as exc:
            raise self._unavailable(exc) from None
        reply["enqueued_at"] = _iso(job.enqueued_at)
        reply["started_at"] = _iso(job.started_at)
        reply["ended_at"] = _iso(job.ended_at)
        return reply

    def close(self) -> None:
        self.redis.close()


def failure_reason(job: Job, rq_status: JobStatus | None) -> str:
    """One line on why a job failed: the last line of rq's exception text, or its state."""
    if rq_status in (JobStatus.STOPPED, JobStatus.CANCELED):
        return f"job {rq_status.value}"
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or ""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "failed (no reason recorded)"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- the supervisor's side ----------------------------------------------------------------------
def workers_ready(conn: redis.Redis, names: list[str]) -> bool:
    """True once every named rq worker has registered itself in Redis."""
    keys = {Worker.redis_worker_namespace_prefix + n for n in names}
    return keys <= {k if isinstance(k, str) else k.decode() for k in Worker.all_keys(conn)}


def fail_jobs_of_dead_worker(conn: redis.Redis, name: str, reason: str) -> str | None:
    """Fail the job a dead rq worker was running (rq itself never will: the worker that would
    have recorded the failure is gone); retire its registration. Returns the job id, if any."""
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=conn)
    if worker is None:
        return None
    job = worker.get_current_job()
    failed = None
    if job is not None and job.get_status() in (JobStatus.STARTED, JobStatus.QUEUED):
        job.ended_at = now()
        queue = Queue(job.origin, connection=conn)
        worker.handle_job_failure(job, queue, exc_string=reason)
        job.started_job_registry.remove_executions(job)
        failed = str(job.id)
        log.warning("job %s failed: %s", job.id, reason)
    worker.register_death()
    return failed
