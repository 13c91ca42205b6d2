"""echoswarm: a distributed load-test harness for echo servers over gRPC, WebSocket and TCP.

Submodules: ``wire`` (frame header), ``measure`` (the measurement core), ``users`` (Locust users
per transport), ``results`` (the results directory), ``__main__`` (local orchestration).
"""

__version__ = "0.1.0"
