"""S000 — the same paced audio stream over gRPC bidi, WebSocket and raw TCP, side by side.

Every user holds one stream: a 3200-byte frame (16 kHz, 16-bit mono, 100 ms) every 100 ms,
echoed by the server; per-message latency is measured from each frame's intended send time
(rows ``grpc bidi msg``, ``ws msg``, ``tcp msg``, plus ``connect``). Users are split evenly
across the transports; choose and weight them with ``--transports grpc:2,ws,tcp``.

Knobs (Locust custom arguments, also in the web UI): ``--frame-bytes``, ``--interval-ms``,
``--mode paced|pingpong``, ``--reply-timeout-s``, ``--stream-seconds``, ``--stream-messages``;
targets ``--grpc-target``, ``--ws-url``, ``--tcp-target``.

Run it (from the repository root):

    python -m echoswarm run locustfiles/audio_stream.py -u 300 -t 60s     # servers + workers
    locust -f locustfiles/audio_stream.py                                  # web UI, own servers
    locust -f locustfiles/audio_stream.py --headless -u 30 -r 30 -t 30s \\
        --grpc-target 127.0.0.1:50051 --ws-url ws://127.0.0.1:8765/echo \\
        --tcp-target 127.0.0.1:7777
    locust -f locustfiles/audio_stream.py --headless --processes 4 -u 1000 -r 200 -t 60s
    locust -f locustfiles/audio_stream.py --master          # and on each load machine:
    locust -f locustfiles/audio_stream.py --worker --master-host MASTER

(start the servers yourself with ``python -m servers grpc|ws|tcp`` for the plain ``locust``
forms).
"""

import locust  # noqa: F401,I001  (gevent monkey-patching first)

from echoswarm.users import GrpcUser, TcpUser, WebSocketUser

ECHOSWARM_SERVERS = [
    {"kind": "grpc", "option": "--grpc-target"},
    {"kind": "ws", "option": "--ws-url", "args": ["--work", "none"]},
    {"kind": "tcp", "option": "--tcp-target", "args": ["--model", "asyncio"]},
]


class GrpcAudio(GrpcUser):
    """One bidi call carrying the audio cadence."""

    pattern = "bidi"


class WsAudio(WebSocketUser):
    """One long-lived WebSocket session carrying the audio cadence (binary frames)."""

    pattern = "session"


class TcpAudio(TcpUser):
    """One persistent TCP connection carrying the audio cadence."""

    pattern = "stream"
