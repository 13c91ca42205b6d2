"""S003 client — short-lived TCP connections against one of the nine server models.

What the seed's client meant to do, measured: ``-u`` users (its WORKER_COUNT) each make
``--connections-per-user`` connections one after another (its ACTION_COUNT, default here: until
the test stops), and on each connection ``--round-trips`` echo round trips (its SEND_RECV_COUNT,
default 50) of ``--frame-bytes`` frames, then close. Rows: ``connect`` (TCP handshake),
``msg`` (each round trip) and ``session`` (connect to close, bytes sent). A user that has made
its connections stops.

The server model is the declared server's ``--model`` argument (asyncio below); the sweep
replaces it per cell: ``python -m echoswarm sweep locustfiles/tcp_churn.py --models all
--users 50,150,1000``. Or start ``python -m servers tcp --model epoll`` yourself.

Run it (from the repository root):

    python -m echoswarm run locustfiles/tcp_churn.py -u 150 -t 60s
    python -m servers tcp --model select &  locust -f locustfiles/tcp_churn.py          # web UI
    locust -f locustfiles/tcp_churn.py --headless -u 50 -r 50 -t 30s \\
        --tcp-target 127.0.0.1:7777 --connections-per-user 100 --round-trips 50
    locust -f locustfiles/tcp_churn.py --headless --processes 4 -u 1000 -r 200 -t 60s
    locust -f locustfiles/tcp_churn.py --master  /  --worker --master-host MASTER
"""

import locust  # noqa: F401,I001  (gevent monkey-patching first)

from echoswarm.users import TcpUser, end_test_when_users_done

end_test_when_users_done()  # the test ends as soon as every user has made its connections

ECHOSWARM_SERVERS = [{"kind": "tcp", "option": "--tcp-target", "args": ["--model", "asyncio"]}]


class ChurnUser(TcpUser):
    """connect → round trips → close, repeatedly."""

    pattern = "churn"
