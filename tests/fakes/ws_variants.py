"""Locust users for the WebSocket tests: the short-lived request pattern with STATS work, and
text messages on a long-lived session."""

import locust  # noqa: F401,I001

from echoswarm.users.websocket import WebSocketUser


class WsStatsRequest(WebSocketUser):
    pattern = "request"
    stats = True


class WsTextSession(WebSocketUser):
    pattern = "session"
    text = True


class WsBinaryRequest(WebSocketUser):
    pattern = "request"
