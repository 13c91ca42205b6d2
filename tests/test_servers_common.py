"""What every server kind promises (DESIGN.md "Command lines"): the LISTENING line, ``--port 0``,
one-line usage errors with exit 2 (bad flags, port in use, unusable address) and a clean exit 0
on SIGTERM and SIGINT. Runs for grpc and ws, and tcp once ``servers/tcp`` exists."""

from __future__ import annotations

import re
import resource
import signal
import socket
import subprocess

import psutil
import pytest

from tests import procs

KINDS = ["grpc", "ws"] + (["tcp"] if (procs.ROOT / "servers/tcp/__init__.py").exists() else [])
BAD_FLAGS: dict[str, list[list[str]]] = {
    "grpc": [["--impl", "fast"], ["--threads", "0"], ["--max-message-bytes", "-5"]],
    "ws": [["--work", "sleep"], ["--max-size", "0"], ["--reply", "never"]],
    "tcp": [["--model", "nonesuch"]],
}
COMMON_BAD_FLAGS = [["--port", "70000"], ["--delay-ms", "-1"], ["--no-such-flag"]]
pytestmark = pytest.mark.timeout(60)


def run_servers(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [procs.PYTHON, "-m", "servers", *argv],
        cwd=procs.ROOT,
        env=procs.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_usage_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "error" in lines[0]
    for word in words:
        assert word in lines[0]
    assert "LISTENING" not in result.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_listening_line_and_port_zero(start_server, kind: str) -> None:
    a = start_server(kind)
    b = start_server(kind)
    for p in (a, b):
        assert re.fullmatch(rf"LISTENING {kind} 127\.0\.0\.1:\d+", p.first_line)
        assert p.host == "127.0.0.1" and 0 < p.port < 65536
        with socket.create_connection((p.host, p.port), timeout=5):
            pass  # the reported port really accepts connections
    assert a.port != b.port


@pytest.mark.parametrize(
    "kind, flags",
    [(k, f) for k in KINDS for f in BAD_FLAGS[k] + COMMON_BAD_FLAGS],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_bad_flags_are_one_line_and_exit_2(kind: str, flags: list[str]) -> None:
    assert_one_line_usage_error(run_servers(kind, *flags), flags[0])


def test_unknown_kind_is_one_line_and_exit_2() -> None:
    assert_one_line_usage_error(run_servers("smtp"), "smtp")
    assert_one_line_usage_error(run_servers())


def test_help_still_works() -> None:
    result = run_servers("grpc", "--help")
    assert result.returncode == 0 and "--impl" in result.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_port_in_use_is_one_line_and_exit_2(start_server, kind: str) -> None:
    """Same kind twice on one port: gRPC would share it via SO_REUSEPORT unless told not to."""
    first = start_server(kind)
    result = run_servers(kind, "--port", str(first.port))
    assert_one_line_usage_error(result, str(first.port), "already in use")
    with socket.create_connection((first.host, first.port), timeout=5):
        pass  # the first server is unharmed


@pytest.mark.parametrize("kind", KINDS)
def test_address_not_on_this_machine_is_one_line_and_exit_2(kind: str) -> None:
    # 192.0.2.1 is TEST-NET-1: never a local address, and binding sends no traffic.
    result = run_servers(kind, "--host", "192.0.2.1", "--port", "0")
    assert_one_line_usage_error(result, "192.0.2.1")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("kind", KINDS)
def test_signals_stop_cleanly_with_exit_0(start_server, kind: str, sig: int) -> None:
    p = start_server(kind)
    with socket.create_connection((p.host, p.port), timeout=5):
        assert p.stop(sig, timeout=10) == 0
    assert "Traceback" not in p.stderr_text()


@pytest.mark.parametrize("kind", ["grpc", "ws"])
def test_server_raises_its_open_files_limit(tmp_path, kind: str) -> None:
    """Started with a soft limit of 256, the server lifts it to the hard limit itself."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"hard RLIMIT_NOFILE is only {hard}")
    low_then_run = (
        "import resource as r, runpy, sys; "
        "r.setrlimit(r.RLIMIT_NOFILE, (256, r.getrlimit(r.RLIMIT_NOFILE)[1])); "
        "sys.argv = ['servers', *sys.argv[1:]]; runpy.run_module('servers', run_name='__main__')"
    )
    p = procs.start([procs.PYTHON, "-c", low_then_run, kind, "--port", "0"], tmp_path=tmp_path)
    try:
        soft_now, hard_now = psutil.Process(p.pid).rlimit(psutil.RLIMIT_NOFILE)
        assert soft_now == hard_now == hard
    finally:
        assert p.stop() == 0
