"""Test-only scenario: one paced TCP stream per user against ``python -m servers tcp``.

Used by the results-pipeline end-to-end tests: real sockets, real echo server, real measurement.
Pass ``--tcp-target HOST:PORT`` (and e.g. ``--interval-ms 5``).
"""

import locust  # noqa: F401,I001  (gevent monkey-patching first)

from echoswarm.users.tcp import TcpUser


class TcpEcho(TcpUser):
    """One persistent TCP connection carrying a paced stream."""

    pattern = "stream"
