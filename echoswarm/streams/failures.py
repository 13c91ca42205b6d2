"""Every failure text the users record, in one place.

Texts are short and stable — no addresses, counters or per-message numbers — so Locust's
failure table groups equal causes (the seq and connection are in the sample itself). gevent-free:
the gRPC driver process uses the same texts.
"""

from __future__ import annotations

import errno
import socket

UNAVAILABLE = "unavailable (server down or connection lost)"
DRIVER_GONE = "the gRPC driver process ended"
CANCELLED = "cancelled (the RPC ended with status CANCELLED)"


class ConnectionLost(Exception):
    """The peer closed, reset or garbled the connection; the message is the sample's error."""


_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by peer",
    errno.EPIPE: "connection closed by peer (broken pipe)",
    errno.ECONNABORTED: "connection aborted",
    errno.ETIMEDOUT: "timeout",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
}


def describe(exc: BaseException) -> str:
    """A short, stable failure text for an exception."""
    if isinstance(exc, ConnectionLost):
        return str(exc)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve host"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_TEXT:
        return _ERRNO_TEXT[exc.errno]
    if isinstance(exc, OSError):
        return f"socket error: {exc.strerror or exc}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def ws_describe(exc: BaseException) -> str:
    """Failure text for websocket-client's exceptions."""
    import websocket  # (here: the gRPC driver process never needs it)

    if isinstance(exc, websocket.WebSocketBadStatusException):
        return f"handshake rejected: HTTP {exc.status_code}"
    if isinstance(exc, websocket.WebSocketTimeoutException):
        return "timeout"
    if isinstance(exc, websocket.WebSocketConnectionClosedException):
        return "connection closed by peer"
    if isinstance(exc, websocket.WebSocketAddressException):
        return "cannot resolve host"
    if isinstance(exc, websocket.WebSocketProtocolException):
        return f"protocol error: {exc}"
    return describe(exc)


def grpc_describe(exc: BaseException) -> str:
    """A stable failure text for an RPC error: the status code, and details when short."""
    code = getattr(exc, "code", None)
    status = code() if callable(code) else None
    name = getattr(status, "name", None)  # a grpc.StatusCode (not imported: gevent side)
    if not isinstance(name, str):
        return describe(exc)
    details_fn = getattr(exc, "details", None)
    return grpc_status_text(name, (details_fn() if callable(details_fn) else "") or "")


CORE_WRITE_FAILED = "Internal error from Core"
"""What grpc.aio sets as an INTERNAL status when a write fails because the transport died under
it (``set_internal_error``): it races with the UNAVAILABLE status the read side gets for the
same lost connection, so it is reported as that."""


def grpc_status_text(name: str, details: str) -> str:
    """The failure text of a finished RPC from its status code's name and details."""
    if name == "DEADLINE_EXCEEDED":
        return "timeout (deadline exceeded)"
    if name == "UNAVAILABLE" or (name == "INTERNAL" and details == CORE_WRITE_FAILED):
        return UNAVAILABLE
    first = details.splitlines()[0] if details else ""
    return f"{name.lower()}: {first[:120]}" if first else name.lower()


def channel_not_ready(timeout_s: float) -> str:
    return f"not ready within {timeout_s:g} s (server down or unreachable)"


SUMMARY_MISCOUNT = "summary does not count every frame sent"
SUMMARY_SEQS = "summary first/last seq differ from what was sent"
FRAME_OUT_OF_ORDER = "out of order: frame seq differs from its position in the stream"
FRAME_PAYLOAD = "frame payload differs from the requested pattern"
REPLY_SEQ = "reply seq differs from the request's"
REPLY_STAMPS = "echo mismatch in the timestamps"
STREAM_ENDED_EARLY = "stream ended early"
FRAME_LOST_ON_STOP = "test stopped before the frame arrived"
