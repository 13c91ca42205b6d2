"""A scenario declaration the infra tests hand to ``python -m infra run`` (never imported by
them: ``run`` reads ECHOSWARM_SERVERS as a literal, like the local orchestrator)."""

ECHOSWARM_SERVERS = [
    {"kind": "tcp", "option": "--tcp-target", "args": ["--model", "asyncio"]},
    {"kind": "ws", "option": "--ws-url"},
]
