"""The multi-host harness (tests/netns.py) proves itself: an echo server on one namespace host,
bound to that host's own address, reached from another; cutting the server host's link makes a
bounded client time out (a partition, not a reset) and restoring it brings the service — and an
open connection — back; everything is gone afterwards, also when the test body fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests import netns, procs

pytestmark = pytest.mark.timeout(90)
PORT = "7777"


def echo_server(host: netns.Host) -> procs.Proc:
    server = host.start([procs.PYTHON, "-m", "servers", "tcp", "--host", host.addr, "--port", PORT])
    assert server.first_line == f"LISTENING tcp {host.addr}:{PORT}"
    return server


def ours_left(net: netns.Network) -> tuple[list[str], str]:
    """Our namespaces still listed, and the root namespace's interfaces (for leftovers)."""
    return [n for n in netns.namespaces() if n.startswith(net.tag)], netns.ip("-o", "link")


def wait_probe_ok(host: netns.Host, target: str, within: float) -> subprocess.CompletedProcess[str]:
    """Probe until an echo succeeds (ARP and TCP retransmits settle after a restore)."""
    deadline = time.monotonic() + within
    while True:
        res = host.run(netns.probe_argv(target, timeout=1.0))
        if res.returncode == 0 or time.monotonic() > deadline:
            return res


def test_two_hosts_echo_over_the_bridge_and_leave_nothing(tmp_path: Path) -> None:
    links_before = netns.ip("-o", "link")
    with netns.network(2, tmp_path) as net:
        a, b = net.hosts
        assert (a.addr, b.addr) == ("10.77.0.1", "10.77.0.2")
        server = echo_server(a)
        res = b.run(netns.probe_argv(f"{a.addr}:{PORT}"))
        assert res.returncode == 0 and res.stdout.startswith("ok"), res
        # Each host's loopback is up and private: a server on b's 127.0.0.1 is b's alone.
        for host in net.hosts:
            assert "UP" in netns.ip("-n", host.name, "-o", "link", "show", "lo").split(">")[0]
        local = b.start([procs.PYTHON, "-m", "servers", "tcp", "--port", "0"])
        assert b.run(netns.probe_argv(local.target)).returncode == 0
        assert a.run(netns.probe_argv(local.target)).returncode == netns.EXIT_FAILED  # refused
        pid = server.pid
        tag = net.tag
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert [n for n in netns.namespaces() if n.startswith(tag)] == []
    assert netns.ip("-o", "link") == links_before  # nothing was ever created in the root namespace


def test_cut_link_times_out_and_restore_recovers(tmp_path: Path) -> None:
    with netns.network(3, tmp_path) as net:
        server_host, client_host, bystander = net.hosts
        echo_server(server_host)
        target = f"{server_host.addr}:{PORT}"
        assert client_host.run(netns.probe_argv(target)).returncode == 0
        # An open connection from the client host, kept across the cut (a Python child there).
        keeper = client_host.start(
            [procs.PYTHON, "-c", KEEPER, server_host.addr, PORT], wait_listening=False
        )
        assert procs.read_line(keeper.popen, 20).strip() == "echo 0 ok"

        server_host.cut()
        t0 = time.monotonic()
        res = client_host.run(netns.probe_argv(target, timeout=1.5), timeout=20)
        took = time.monotonic() - t0
        assert res.returncode == netns.EXIT_TIMEOUT, res  # dropped, never refused or reset
        assert 1.5 <= took < 10, took
        keeper.popen.send_signal(signal.SIGUSR1)
        assert procs.read_line(keeper.popen, 20).strip() == "echo 1 timeout"
        # The other hosts still talk to each other: only the server host is cut off.
        other = bystander.start([procs.PYTHON, "-m", "servers", "tcp", "--host", bystander.addr,
                                 "--port", PORT])  # fmt: skip
        assert client_host.run(netns.probe_argv(other.target)).returncode == 0

        server_host.restore()
        res = wait_probe_ok(client_host, target, within=15)
        assert res.returncode == 0, res
        # The connection opened before the cut survives it (TCP retransmits once plugged in).
        keeper.popen.send_signal(signal.SIGUSR1)
        assert procs.read_line(keeper.popen, 30).strip() == "echo 2 ok"
        assert keeper.stop() in (0, -signal.SIGTERM)


KEEPER = """
import signal, socket, sys
go = {signal.SIGUSR1}
signal.pthread_sigmask(signal.SIG_BLOCK, go)  # each step waits for the test's SIGUSR1
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
def echo(i, timeout):
    sock.settimeout(timeout)
    try:
        if i != 2:  # echo 2 reads the echo of what echo 1 sent during the cut
            sock.sendall(bytes([i]) * 32)
        got = b""
        while len(got) < 32:
            got += sock.recv(32 - len(got))
        ok = got == bytes([1 if i == 2 else i]) * 32
        print(f"echo {i} ok" if ok else f"echo {i} differs", flush=True)
    except TimeoutError:
        print(f"echo {i} timeout", flush=True)
echo(0, 5)
signal.sigwait(go)
echo(1, 1.5)
signal.sigwait(go)
echo(2, 25)
signal.sigwait(go)  # held open until the test stops it
"""


def test_everything_is_removed_when_the_test_body_fails(tmp_path: Path) -> None:
    tag, pid = "", 0
    stray: subprocess.Popen[bytes] | None = None
    with pytest.raises(RuntimeError, match="the test failed"):
        with netns.network(2, tmp_path) as net:
            tag, pid = net.tag, echo_server(net.hosts[0]).pid
            # Something started by other means, still inside a namespace, is killed too.
            stray = subprocess.Popen(
                net.hosts[1].argv(["sleep", "60"]), stdin=subprocess.DEVNULL, start_new_session=True
            )
            raise RuntimeError("the test failed")
    assert stray is not None and stray.wait(timeout=10) == -signal.SIGKILL
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert [n for n in netns.namespaces() if n.startswith(tag)] == []


def test_stale_namespaces_of_a_dead_session_are_swept(tmp_path: Path) -> None:
    netns.require()
    child = subprocess.Popen(["true"])  # its pid names a session that has ended
    child.wait()
    stale = f"{netns.PREFIX}-{child.pid}-0-sw"
    netns.ip("netns", "add", stale)
    try:
        assert stale in netns.sweep_stale()
    finally:
        netns.ip("netns", "delete", stale, check=False)
    assert stale not in netns.namespaces()
    mine = f"{netns.PREFIX}-{os.getpid()}-999999-sw"  # ours, alive: never swept
    netns.ip("netns", "add", mine)
    try:
        assert mine not in netns.sweep_stale()
    finally:
        netns.ip("netns", "delete", mine)


def test_without_root_it_skips_or_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root: the harness skips with the reason, or fails when ECHOSWARM_REQUIRE_SYSDEPS=1
    (CI). (The euid is replaced: this machine cannot run the venv's Python unprivileged.)"""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netns.unavailable_reason() == "network namespaces need root"
    monkeypatch.delenv("ECHOSWARM_REQUIRE_SYSDEPS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="need root"):
        netns.require()
    monkeypatch.setenv("ECHOSWARM_REQUIRE_SYSDEPS", "1")
    with pytest.raises(pytest.fail.Exception, match="need root"):
        netns.require()


def test_probe_reports_unreachable_as_failed_not_hang() -> None:
    """The probe itself is bounded: a refused port is a failure at once (on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    assert netns.probe(f"127.0.0.1:{port}", timeout=2) == netns.EXIT_FAILED
    assert time.monotonic() - t0 < 2
