"""The gevent-free side of the load: the stream core every transport shares, its asyncio
driver for gRPC, and the gRPC driver process that runs it.

Nothing here imports gevent or Locust: ``core`` (schedule, in-flight matching, expiry, drain,
ping-pong decisions), ``pacer`` (due-time tables, the asyncio pacer), ``timerfd``
(sub-millisecond wake-ups), ``failures`` (every failure text), ``grpc_calls`` (the four RPC
kinds on ``grpc.aio``), ``protocol`` and ``sidecar`` (the gRPC driver process).
"""
