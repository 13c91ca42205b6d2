"""Many hosts on one machine: Linux network namespaces on a private bridge, for multi-host tests.

    with netns.network(3, tmp_path) as net:           # hosts 10.77.0.1, .2, .3
        server = net.hosts[0].start(
            [PYTHON, "-m", "servers", "tcp", "--host", net.hosts[0].addr, "--port", "7777"]
        )
        assert net.hosts[1].run(netns.probe_argv(server.target)).returncode == 0
        net.hosts[0].cut()                            # unplug host 0: its packets are dropped
        net.hosts[0].restore()

Layout: a "switch" namespace holds a bridge; every host is a namespace of its own with one veth
pair (``eth0`` inside the host, ``pN`` on the switch), its own address in ``10.77.0.0/24`` and
its loopback up; processes started in host N see the host name ``hN`` (a UTS namespace each:
Locust names workers after it, so run.json tells the hosts apart). Nothing is created in the
machine's own namespace — the hosts cannot reach the outside world and nothing outside can
reach them — so deleting the namespaces removes every interface, address and route; two test
sessions never collide (namespace names carry the pid).

``cut()`` sets the host's switch port down: like pulling its cable, the host keeps its address
and routes, and every packet to or from it is dropped (connects and reads time out; nothing is
reset). ``restore()`` plugs it back and waits for the carrier.

Processes are started with ``ip netns exec`` (``start`` waits for a LISTENING line, ``spawn``
sends a long-running process's output to a file) through the pdeath shim (``tests/procs.py``):
they die with pytest even if it is killed, and the network stops them (and kills anything else
still inside a namespace) before deleting the namespaces — on success, failure or Ctrl-C. Namespaces
left by a killed session are removed by the next one. Needs root and ``ip`` (iproute2):
:func:`require` skips, or fails when ``ECHOSWARM_REQUIRE_SYSDEPS=1`` (CI).

Run as a module, it is also a bounded echo probe for use inside a host:
``python -m tests.netns probe HOST:PORT [--timeout S]`` → exit 0 (echoed), 3 (timed out),
4 (refused, reset or unreachable).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests import procs

PREFIX = "eswan"
SUBNET = "10.77.0"
PREFIX_LEN = 24
_NAME = re.compile(rf"^{PREFIX}-(\d+)-\d+-(?:sw|h\d+)$")
_counter = iter(range(1_000_000))
_SET_HOSTNAME = (
    "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execvp(sys.argv[2], sys.argv[2:])"
)


class NetnsError(RuntimeError):
    """A namespace command failed; the message names the command and its stderr."""


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (None if they can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip not installed (run scripts/sysdeps.sh as root)"
    return None


def require() -> None:
    """Skip the calling test if namespaces are unavailable (fail in CI, where they must be)."""
    import pytest

    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("ECHOSWARM_REQUIRE_SYSDEPS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def ip(*args: str, check: bool = True, timeout: float = 10.0) -> str:
    """Run ``ip ARGS``; its stdout (NetnsError on failure)."""
    res = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and res.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {res.stderr.strip() or res.returncode}")
    return res.stdout


def namespaces() -> list[str]:
    """Names of the machine's named network namespaces."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def sweep_stale() -> list[str]:
    """Delete namespaces of ours whose creating process is gone (a killed test session)."""
    removed = []
    for name in namespaces():
        m = _NAME.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _delete_namespace(name)
            removed.append(name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_namespace(name: str) -> None:
    """Kill whatever still runs inside ``name``, then delete it."""
    for pid in ip("netns", "pids", name, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "delete", name, check=False)


@dataclass
class Host:
    """One namespace host: ``addr`` on ``eth0``, plugged into switch port ``port``."""

    network: Network
    index: int
    name: str
    addr: str
    port: str

    @property
    def hostname(self) -> str:
        """The host name its processes see (``h0``, ``h1``, ...; Locust names workers by it)."""
        return f"h{self.index}"

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host: its network namespace, and a UTS namespace of its own
        named :attr:`hostname` (the same pid all along: each step execs the next)."""
        return ["ip", "netns", "exec", self.name, "unshare", "--uts",
                procs.PYTHON, "-c", _SET_HOSTNAME, self.hostname, *argv]  # fmt: skip

    def start(
        self,
        argv: Sequence[str],
        *,
        wait_listening: bool = True,
        timeout: float = 30.0,
        extra_env: dict[str, str] | None = None,
    ) -> procs.Proc:
        """Start ``argv`` inside this host (dies with pytest; stopped when the network closes)."""
        proc = procs.start(
            self.argv(argv),
            tmp_path=self.network.tmp_path / self.name,
            wait_listening=wait_listening,
            timeout=timeout,
            extra_env=extra_env,
        )
        self.network.started.append(proc)
        return proc

    def spawn(
        self, argv: Sequence[str], *, log: str, extra_env: dict[str, str] | None = None
    ) -> procs.Proc:
        """Start a long-running ``argv`` inside this host with stdout and stderr in one file
        (``<tmp>/<host>/<log>.log``, :meth:`procs.Proc.stderr_text`), not a pipe: a chatty
        process (Locust's headless stats) can never block on a pipe nobody reads. Dies with
        pytest; stopped when the network closes."""
        folder = self.network.tmp_path / self.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{log}.log"
        with path.open("w") as out:
            popen = subprocess.Popen(
                [procs.PYTHON, "-m", "echoswarm.pdeath", *self.argv(argv)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=procs.ROOT,
                env=procs.env(ECHOSWARM_PARENT_PID=str(os.getpid()), **(extra_env or {})),
                start_new_session=True,
            )
        proc = procs.Proc(popen, list(argv), stderr_path=path)
        self.network.started.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], *, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this host to completion (killed after ``timeout`` seconds)."""
        return subprocess.run(
            [procs.PYTHON, "-m", "echoswarm.pdeath", *self.argv(argv)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=procs.ROOT,
            env=procs.env(ECHOSWARM_PARENT_PID=str(os.getpid())),
            stdin=subprocess.DEVNULL,
        )

    def cut(self) -> None:
        """Unplug this host: its switch port goes down, its packets are dropped."""
        ip("-n", self.network.switch, "link", "set", self.port, "down")
        _wait(lambda: not self.carrier(), f"{self.name} still has a carrier after cut()")

    def restore(self) -> None:
        """Plug this host back in and wait until its link is up."""
        ip("-n", self.network.switch, "link", "set", self.port, "up")
        _wait(self.carrier, f"{self.name} has no carrier after restore()")

    def carrier(self) -> bool:
        flags = ip("-n", self.name, "-o", "link", "show", "eth0")
        return "LOWER_UP" in flags and "NO-CARRIER" not in flags


@dataclass
class Network:
    """N namespace hosts on one bridge. Use :func:`network`; ``close()`` removes everything."""

    size: int
    tmp_path: Path
    tag: str = field(default_factory=lambda: f"{PREFIX}-{os.getpid()}-{next(_counter)}")
    hosts: list[Host] = field(default_factory=list)
    started: list[procs.Proc] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def names(self) -> list[str]:
        return [self.switch] + [f"{self.tag}-h{i}" for i in range(self.size)]

    def create(self) -> None:
        if not 1 <= self.size <= 250:
            raise ValueError("between 1 and 250 hosts")
        sweep_stale()
        self._add_namespace(self.switch)
        ip("-n", self.switch, "link", "set", "lo", "up")
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for i in range(self.size):
            name, port, addr = f"{self.tag}-h{i}", f"p{i}", f"{SUBNET}.{i + 1}"
            self._add_namespace(name)
            # Both ends are created straight inside their namespaces: nothing in the root one.
            ip("link", "add", port, "netns", self.switch, "type", "veth",
               "peer", "name", "eth0", "netns", name)  # fmt: skip
            ip("-n", self.switch, "link", "set", port, "master", "br0")
            ip("-n", self.switch, "link", "set", port, "up")
            ip("-n", name, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", "eth0")
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", name, "link", "set", "eth0", "up")
            self.hosts.append(Host(self, i, name, addr, port))
        for host in self.hosts:
            _wait(host.carrier, f"{host.name}: eth0 has no carrier")

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.created.append(name)

    def close(self) -> None:
        """Stop every process started here, kill anything left inside, delete the namespaces."""
        errors = []
        for proc in self.started:
            try:
                proc.stop(timeout=10)
            except AssertionError as exc:  # it had to be killed: still clean up, then report
                errors.append(str(exc))
        for name in reversed(self.created):
            _delete_namespace(name)
        left = [name for name in namespaces() if name in self.created]
        if left:
            errors.append(f"namespaces left behind: {left}")
        self.created = [name for name in self.created if name in left]
        if errors:
            raise NetnsError("; ".join(errors))


@contextlib.contextmanager
def network(size: int, tmp_path: Path) -> Iterator[Network]:
    """``size`` hosts on a bridge, all removed on exit (also when the body raises)."""
    require()
    net = Network(size, tmp_path)
    try:
        net.create()
        yield net
    finally:
        net.close()


def _wait(condition: object, message: str, timeout: float = 5.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise NetnsError(message)
        time.sleep(0.02)  # polling the kernel's link state, bounded by the deadline


# --- the probe: a bounded echo client to run inside a host -------------------------------------

EXIT_TIMEOUT, EXIT_FAILED = 3, 4


def probe_argv(target: str, timeout: float = 2.0) -> list[str]:
    """The probe's command line (run it with :meth:`Host.run`)."""
    return [procs.PYTHON, "-m", "tests.netns", "probe", target, "--timeout", str(timeout)]


def probe(target: str, timeout: float) -> int:
    """Connect, echo 64 bytes, within ``timeout`` seconds; print the outcome; exit code."""
    host, _, port = target.rpartition(":")
    payload = os.urandom(64)
    t0 = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(max(0.01, timeout - (time.monotonic() - t0)))
            sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = sock.recv(len(payload) - len(got))
                if not chunk:
                    raise ConnectionResetError("closed before the echo")
                got += chunk
    except TimeoutError:
        print(f"timeout after {time.monotonic() - t0:.2f}s")
        return EXIT_TIMEOUT
    except OSError as exc:
        print(f"failed: {exc}")
        return EXIT_FAILED
    if got != payload:
        print("failed: echo differs")
        return EXIT_FAILED
    print(f"ok {(time.monotonic() - t0) * 1e3:.2f}ms")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.netns")
    sub = p.add_subparsers(dest="what", required=True)
    pr = sub.add_parser("probe", help="a bounded echo: exit 0 ok, 3 timeout, 4 failed")
    pr.add_argument("target", help="HOST:PORT")
    pr.add_argument("--timeout", type=float, default=2.0)
    args = p.parse_args(argv)
    return probe(args.target, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
