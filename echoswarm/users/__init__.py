"""Abstract Locust users, one module per transport: ``grpc``, ``websocket``, ``tcp``.

Import a transport module from a locustfile (after ``import locust`` so gevent patches first).
"""
