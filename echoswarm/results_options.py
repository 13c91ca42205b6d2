"""Validators for the results plugin's Locust options (argparse ``type=`` functions)."""

from __future__ import annotations

from echoswarm.argtypes import float_between
from echoswarm.argtypes import positive_int as positive_int

rate = float_between(0.0, 1.0)
seconds = float_between(0.0, 3600.0, " s")
