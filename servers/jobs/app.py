"""The HTTP API of seed S004 (Starlette on uvicorn): the same CPU-bound job inline or queued.

- ``POST /stt/native`` — multipart ``file``: the work runs in the request (in Starlette's thread
  pool, as a plain ``def`` endpoint of the seed's FastAPI app would: every concurrent upload
  shares this one process's GIL); 200 ``{"job_id", "result"}``.
- ``POST /stt/task`` — saves the upload, enqueues the job on rq (and the upload's cleanup 60 s
  later); 202 ``{"job_id", "file_id"}``.
- ``GET /stt/task/{job_id}`` — 200 ``{"job_id", "status", "result"?, "error"?, "enqueued_at",
  "started_at", "ended_at"}``; 404 for an unknown (or expired) id.
- ``GET /health`` — ``{"status": "ok", "queue": "ok"|"off"|<why not>, "workers": n}`` (not part
  of the seed; for operators and tests).

Errors are JSON ``{"detail": "<one line>"}``: 413 over ``--max-upload-bytes`` (decided from
Content-Length before reading anything, or as soon as a chunked body passes the limit), 422 no
``file`` field, a malformed form, not a WAV or a corrupt one (the reason says which), 503 when
Redis cannot be reached or the queue is off (``--queue-workers 0``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from servers.jobs.audio import BadAudio, analyze, decode_wav
from servers.jobs.queue import JobQueue, QueueUnavailable

log = logging.getLogger("servers.jobs")

FIELD = "file"


@dataclass
class ApiConfig:
    passes: int  # the job's fixed work (from --job-cpu-ms, calibrated at start)
    max_upload_bytes: int
    upload_dir: Path
    delay_s: float = 0.0
    queue: JobQueue | None = None  # None: --queue-workers 0 (inline only)


class _TooLarge(Exception):
    pass


def _error(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


async def _read_upload(request: Request, limit: int) -> bytes | JSONResponse:
    """The uploaded file's bytes, or the error response to send instead."""
    too_large = _error(
        413,
        f"upload larger than --max-upload-bytes {limit}",
        connection="close",  # the rest of the body is never read: do not reuse the connection
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                return too_large
        except ValueError:
            return _error(400, f"bad Content-Length {declared!r}")
    received = 0
    receive = request.receive

    async def counting() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge()
        return message

    limited = Request(request.scope, receive=counting)
    try:
        form = await limited.form(max_files=1, max_fields=16, max_part_size=limit)
    except _TooLarge:
        return too_large
    except HTTPException as exc:  # Starlette's own for a malformed multipart body
        return _error(422, f"malformed multipart form: {exc.detail}")
    try:
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            what = "a plain field, not a file" if upload is not None else "missing"
            return _error(422, f"no file: the multipart field {FIELD!r} is {what}")
        return await upload.read()
    finally:
        await form.close()


def make_app(cfg: ApiConfig) -> Starlette:
    async def delayed(response: Response) -> Response:
        if cfg.delay_s:
            await asyncio.sleep(cfg.delay_s)
        return response

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await delayed(await handler(request))
            except ClientDisconnect:
                return Response(status_code=400)  # nobody is listening any more
            except asyncio.CancelledError:  # the server stopped past --grace-s: say so
                return _error(503, "server shutting down: the job was abandoned")

        return endpoint

    async def native(request: Request) -> Response:
        data = await _read_upload(request, cfg.max_upload_bytes)
        if isinstance(data, Response):
            return data
        try:
            # A shutdown past --grace-s cancels this request; the thread cannot be stopped, so
            # it is abandoned (the server exits without waiting for it) rather than waited for.
            result = await anyio.to_thread.run_sync(
                analyze, data, cfg.passes, abandon_on_cancel=True
            )
        except BadAudio as exc:
            return _error(422, str(exc))
        return JSONResponse({"job_id": uuid.uuid4().hex, "result": result})

    async def submit(request: Request) -> Response:
        queue = cfg.queue
        if queue is None:
            return _error(503, "the job queue is off (--queue-workers 0): use POST /stt/native")
        data = await _read_upload(request, cfg.max_upload_bytes)
        if isinstance(data, Response):
            return data
        try:
            decode_wav(data)  # refuse a bad upload now, not in a worker later
        except BadAudio as exc:
            return _error(422, str(exc))
        file_id = uuid.uuid4().hex
        path = cfg.upload_dir / f"{file_id}.wav"
        await run_in_threadpool(path.write_bytes, data)
        try:
            job_id = await run_in_threadpool(queue.submit, str(path), cfg.passes)
        except QueueUnavailable as exc:
            path.unlink(missing_ok=True)
            return _error(503, str(exc))
        return JSONResponse({"job_id": job_id, "file_id": file_id}, status_code=202)

    async def poll(request: Request) -> Response:
        queue = cfg.queue
        if queue is None:
            return _error(503, "the job queue is off (--queue-workers 0)")
        job_id = str(request.path_params["job_id"])
        try:
            reply = await run_in_threadpool(queue.status, job_id)
        except QueueUnavailable as exc:
            return _error(503, str(exc))
        if reply is None:
            return _error(404, f"no job {job_id!r} (unknown, or expired after its result TTL)")
        return JSONResponse(reply)

    async def health(request: Request) -> Response:
        state: dict[str, Any] = {"status": "ok", "passes_per_job": cfg.passes}
        if cfg.queue is None:
            state["queue"] = "off"
        else:
            try:
                state["workers"] = await run_in_threadpool(cfg.queue.workers)
                state["queue"] = "ok"
            except QueueUnavailable as exc:
                state["queue"] = str(exc)
        return JSONResponse(state)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no route {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    routes = [
        Route("/stt/native", guarded(native), methods=["POST"]),
        Route("/stt/task", guarded(submit), methods=["POST"]),
        Route("/stt/task/{job_id}", guarded(poll), methods=["GET"]),
        Route("/health", guarded(health), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
