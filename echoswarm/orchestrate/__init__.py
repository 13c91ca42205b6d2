"""Local orchestration: ``python -m echoswarm run`` and ``demo`` — servers, a Locust master and
workers on this machine, supervised (``run``, ``supervise``), built from the same command lines
as on EC2 (``commands``), configured from the locustfile's declared servers (``scenario``) and
``echoswarm.toml`` (``config``), with a progress line (``progress``) and SLO verdicts
(``slo``)."""
