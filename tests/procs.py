"""Process helpers for tests: start real servers/commands, wait for their LISTENING line, and
make sure nothing (processes, listening ports) outlives a test."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from echoswarm.listening import LISTENING_RE

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def env(**extra: str) -> dict[str, str]:
    """Environment for a child: repo root importable, unbuffered output."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["PYTHONUNBUFFERED"] = "1"
    e.update(extra)
    return e


@dataclass
class Proc:
    """A started child process (in its own process group) with its LISTENING address, if any."""

    popen: subprocess.Popen[str]
    argv: list[str]
    host: str = ""
    port: int = 0
    first_line: str = ""
    stderr_path: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def stderr_text(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the process and wait; kill the whole group if it does not exit in time."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
                rc = self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(self.popen.pid)
                self.popen.wait(timeout=5)
                raise AssertionError(
                    f"{self.argv} did not exit within {timeout}s of signal {sig}"
                ) from None
        rc = self.popen.wait()
        if not self._stopped:
            self._stopped = True
            kill_group(self.popen.pid)  # a leftover grandchild would be a bug; make sure
        return rc


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def start(
    argv: Sequence[str],
    *,
    tmp_path: Path,
    wait_listening: bool = True,
    timeout: float = 30.0,
    extra_env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> Proc:
    """Start ``argv`` in a new session; if ``wait_listening``, wait for its LISTENING line."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    stderr_path = tmp_path / f"stderr-{time.monotonic_ns()}.log"
    errf = stderr_path.open("w")
    # Through the pdeath shim: the child gets SIGTERM if this test process dies (a killed
    # pytest must not leave servers behind, even though each child has its own session).
    popen = subprocess.Popen(
        [PYTHON, "-m", "echoswarm.pdeath", *argv],
        stdout=subprocess.PIPE,
        stderr=errf,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
        env=env(ECHOSWARM_PARENT_PID=str(os.getpid()), **(extra_env or {})),
        start_new_session=True,
    )
    errf.close()
    proc = Proc(popen, list(argv), stderr_path=stderr_path)
    if not wait_listening:
        return proc
    line = read_line(popen, timeout)
    m = LISTENING_RE.match(line.strip())
    if not m:
        proc.stop(signal.SIGKILL)
        raise AssertionError(
            f"{argv}: expected a LISTENING line, got {line!r}; stderr:\n{proc.stderr_text()}"
        )
    proc.first_line = line.strip()
    proc.host, proc.port = m.group(2), int(m.group(3))
    return proc


def read_line(popen: subprocess.Popen[str], timeout: float) -> str:
    """One stdout line within ``timeout`` seconds ("" if the process exited first)."""
    assert popen.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(popen.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError(f"no output within {timeout}s from pid {popen.pid}")
        return popen.stdout.readline()
    finally:
        sel.close()


def server(kind: str, *args: str, tmp_path: Path, port: int = 0, **kw: object) -> Proc:
    """Start ``python -m servers KIND --port 0 ARGS`` and wait until it listens."""
    argv = [PYTHON, "-m", "servers", kind, "--port", str(port), *args]
    return start(argv, tmp_path=tmp_path, **kw)  # type: ignore[arg-type]


def descendants() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def listening_ports_of(pids: set[int]) -> list[tuple[int, int]]:
    """(pid, port) of TCP listening sockets owned by ``pids``."""
    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids and conn.laddr:
            out.append((conn.pid, conn.laddr.port))
    return out


# --- raw-socket helpers (for speaking just enough HTTP/WebSocket to test servers' edges) ---


def ws_upgrade_request(host: str, port: int, path: str = "/echo", extra_headers: str = "") -> bytes:
    """An RFC 6455 opening handshake request, byte for byte."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    ).encode()


def read_http_head(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Bytes up to and including the blank line ending an HTTP response head (or EOF)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if b"\r\n\r\n" in data else data


def chromium_flags(profile_dir: Path) -> list[str]:
    """Headless Chromium on a closed machine: no sandbox (root), no background networking."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
    ]
