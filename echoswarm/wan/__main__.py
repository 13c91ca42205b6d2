"""``python -m echoswarm.wan`` — the same as ``python -m echoswarm wan``, without loading the
orchestrator (what :func:`echoswarm.wan.relay_argv` starts)."""

import sys

from echoswarm.wan.cli import main

sys.exit(main())
