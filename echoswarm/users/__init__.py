"""echoswarm's Locust users: the public API locustfiles import.

    import locust  # noqa: F401  (gevent monkey-patching first)
    from echoswarm.users import GrpcUser, TcpUser, WebSocketUser

    class Audio(TcpUser):
        pattern = "stream"

* :class:`GrpcUser` (``pattern`` unary | server_stream | client_stream | bidi), run by the
  process's gRPC driver process (``grpc.aio``, no gevent);
* :class:`WebSocketUser` (``pattern`` session | request; ``text``, ``stats``);
* :class:`TcpUser` (``pattern`` stream | churn);
* :class:`EchoUser`, their base, for scenarios that bring their own link (``open_link``), with
  :class:`Stream` (the gevent stream driver) and :func:`stream_config`;
* :class:`LocustSink`, :class:`Sample`, :class:`Timer`, :func:`next_user_id` and
  :func:`next_conn_id` for users that time their own operations (``locustfiles/job_queue.py``);
* the S001 image workload (:class:`ImageLink`, :func:`image_pool`, :func:`per_user`),
  :func:`end_test_when_users_done` for scenarios whose users finish, and :func:`positive_int`
  (and ``positive_float``, ``non_negative_int``) for scenario options.

Importing this package registers echoswarm's Locust options, the results plugin, the web UI tab
and the process tuning. Inside, one module per transport (``grpc``, ``websocket``, ``tcp``), the
gevent driver over the gevent-free stream core (``gevent_stream``, ``scheduler``; the core is
:mod:`echoswarm.streams`), the gRPC driver's client (``grpc_driver``), ``options``, ``sink``
and ``tuning``.
"""

import locust  # noqa: F401,I001  (gevent monkey-patching first)

from echoswarm.argtypes import non_negative_int, positive_float, positive_int
from echoswarm.measure import Sample, Timer, next_conn_id
from echoswarm.streams.core import StreamConfig, stream_config
from echoswarm.streams.images import Image, ImageLink, image_pool, per_user
from echoswarm.users import options
from echoswarm.users.base import EchoUser
from echoswarm.users.gevent_stream import Link, Stream
from echoswarm.users.grpc import GrpcUser
from echoswarm.users.sink import LocustSink, next_user_id
from echoswarm.users.tcp import TcpLink, TcpUser
from echoswarm.users.websocket import WebSocketUser, WsBinaryLink, WsLink


def end_test_when_users_done() -> None:
    """Make the test end as soon as every user has stopped by itself (the plugin
    :mod:`echoswarm.plugins.autostop`; call it at a locustfile's import)."""
    import echoswarm.plugins.autostop  # noqa: F401  (registers its listeners)


__all__ = [
    "EchoUser",
    "Image",
    "ImageLink",
    "end_test_when_users_done",
    "image_pool",
    "per_user",
    "positive_int",
    "non_negative_int",
    "positive_float",
    "Sample",
    "Timer",
    "next_conn_id",
    "GrpcUser",
    "Link",
    "LocustSink",
    "Stream",
    "StreamConfig",
    "TcpLink",
    "TcpUser",
    "WebSocketUser",
    "WsBinaryLink",
    "WsLink",
    "next_user_id",
    "options",
    "stream_config",
]
