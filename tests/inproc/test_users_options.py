"""echoswarm's Locust options: parsing, defaults, merging, --transports selection, usage errors."""

from __future__ import annotations

import argparse
import subprocess
from types import SimpleNamespace

import pytest

from echoswarm.users import options
from tests import procs


def test_defaults_match_the_documented_ones() -> None:
    d = options.defaults()
    assert d.grpc_target == "127.0.0.1:50051"
    assert d.ws_url == "ws://127.0.0.1:8765/echo"
    assert d.tcp_target == "127.0.0.1:7777"
    assert (d.frame_bytes, d.interval_ms, d.mode) == (3200, 100.0, "paced")
    assert d.transports == "grpc,ws,tcp"
    assert d.reply_timeout_s == 5.0 and d.round_trips == 50
    assert (d.stream_seconds, d.stream_messages, d.connections_per_user) == (0.0, 0, 0)


def test_of_overlays_parsed_options_on_defaults() -> None:
    env = SimpleNamespace(parsed_options=argparse.Namespace(frame_bytes=64, other=1, mode=None))
    merged = options.of(env)
    assert merged.frame_bytes == 64 and merged.mode == "paced" and not hasattr(merged, "other")
    assert options.of(SimpleNamespace(parsed_options=None)).frame_bytes == 3200


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--frame-bytes", "31"], "must be >= 32"),
        (["--interval-ms", "-1"], "must be >= 0"),
        (["--mode", "burst"], "invalid choice"),
        (["--reply-timeout-s", "0"], "must be > 0"),
        (["--round-trips", "0"], "must be >= 1"),
        (["--transports", "grpc,smtp"], "unknown transport 'smtp'"),
        (["--transports", "ws:0"], "weight of 'ws' must be >= 1"),
    ],
)
def test_bad_values_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        options.parse_options(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_parse_transports_weights() -> None:
    assert options.parse_transports("grpc:2, WS ,tcp:3") == {"grpc": 2, "ws": 1, "tcp": 3}
    with pytest.raises(ValueError, match="no transport"):
        options.parse_transports(" , ")


def test_select_user_classes_filters_and_weights() -> None:
    class G:
        transport = "grpc"
        weight = 1

    class W:
        transport = "ws"
        weight = 1

    class Fixed:
        transport = "tcp"
        weight = 1
        fixed_count = 3

    class Foreign:  # not one of ours: kept untouched
        weight = 7

    kept = options.select_user_classes([G, W, Fixed, Foreign], "grpc:3,tcp")
    assert kept == [G, Fixed, Foreign]
    assert G.weight == 3 and Fixed.weight == 1 and Foreign.weight == 7


@pytest.mark.timeout(60)
def test_locust_rejects_a_bad_transport_in_one_line() -> None:
    done = subprocess.run(
        [procs.PYTHON, "-m", "locust", "-f", "locustfiles/audio_stream.py", "--headless",
         "--transports", "carrier-pigeon", "-t", "1s"],
        capture_output=True, text=True, timeout=60, cwd=procs.ROOT, env=procs.env(),
    )  # fmt: skip
    assert done.returncode == 2
    assert "unknown transport 'carrier-pigeon'" in done.stderr
    assert "Traceback" not in done.stderr


def test_of_rechecks_values_that_bypassed_argparse() -> None:
    # the web UI form converts values to the default's type only; of() checks them again
    env = SimpleNamespace(parsed_options=argparse.Namespace(frame_bytes=10))
    with pytest.raises(options.OptionError, match="--frame-bytes 10: 10 must be >= 32"):
        options.of(env)
    env = SimpleNamespace(parsed_options=argparse.Namespace(mode="burst"))
    with pytest.raises(options.OptionError, match="--mode burst"):
        options.of(env)


def test_our_options_are_offered_in_the_web_ui() -> None:
    from locust.argument_parser import ui_extra_args_dict

    extra = ui_extra_args_dict([])
    for key in ("grpc_target", "ws_url", "tcp_target", "frame_bytes", "interval_ms", "mode"):
        assert key in extra, key
    assert list(extra["mode"]["choices"]) == ["paced", "pingpong"]
