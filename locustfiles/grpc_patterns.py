"""S002 — the four gRPC RPC kinds side by side, one user class per kind.

* ``UnaryUser`` → row ``unary``;
* ``ServerStreamUser`` → rows ``server_stream first`` (time to first frame) and
  ``server_stream msg`` (each frame against the schedule it asked for);
* ``ClientStreamUser`` → row ``client_stream`` (the whole upload, bytes sent);
* ``BidiUser`` → row ``bidi msg`` (each echo, from its intended send time);
* every user: ``connect`` (channel until READY).

``--mode paced`` (default) paces every kind at ``--interval-ms``; ``--mode pingpong`` runs
them as fast as possible. Frames per streaming call: ``--stream-messages`` (else
``--stream-seconds`` worth at the interval, else 50). Users are spread evenly over the kinds;
pick some with Locust's own class arguments, e.g. ``locust -f ... BidiUser UnaryUser``.

Run it (from the repository root):

    python -m echoswarm run locustfiles/grpc_patterns.py -u 40 -t 60s
    python -m servers grpc &  locust -f locustfiles/grpc_patterns.py            # web UI
    locust -f locustfiles/grpc_patterns.py --headless -u 8 -r 8 -t 30s --grpc-target 127.0.0.1:50051
    locust -f locustfiles/grpc_patterns.py --headless --processes 2 -u 40 -r 20 -t 30s
    locust -f locustfiles/grpc_patterns.py --master  /  --worker --master-host MASTER
"""

import locust  # noqa: F401,I001  (gevent monkey-patching first)

from echoswarm.users import GrpcUser

ECHOSWARM_SERVERS = [{"kind": "grpc", "option": "--grpc-target"}]


class UnaryUser(GrpcUser):
    pattern = "unary"


class ServerStreamUser(GrpcUser):
    pattern = "server_stream"


class ClientStreamUser(GrpcUser):
    pattern = "client_stream"


class BidiUser(GrpcUser):
    pattern = "bidi"
