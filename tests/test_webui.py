"""The web UI's "echoswarm HDR" tab: merged HDR percentiles and sender lag, live, in a real
master/worker run — checked over HTTP and rendered in headless Chromium."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from echoswarm.orchestrate.supervise import free_port
from tests.conftest import require_tool
from tests.procs import PYTHON, ROOT, chromium_flags, env


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bytes(resp.read())


@pytest.mark.timeout(120)
def test_hdr_tab_is_live_and_renders(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "run.log").open("w+")
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "echoswarm",
            "run",
            "locustfiles/audio_stream.py",
            "--web",
            "--web-port",
            str(port),
            "--workers",
            "1",
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            "60s",
            "--results",
            str(tmp_path / "run"),
            "--no-report",
            "--",
            "--transports",
            "tcp,ws",
        ],
        cwd=ROOT,
        env=env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        rows: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.seek(0) or log.read()
            try:
                stats = json.loads(_get(f"{base}/stats/requests"))
            except OSError:
                stats = {}
            ext = {e["key"]: e["data"] for e in stats.get("extended_stats", [])}
            rows = ext.get("echoswarm-hdr", [])
            msg = [r for r in rows if r["name"] == "msg" and int(str(r["count"])) >= 20]
            if len(msg) == 2:
                break
            time.sleep(0.5)  # the UI itself polls every 2 s; so do we, with a deadline
        else:
            pytest.fail(f"HDR tab never showed both msg rows: {rows}")
        for r in msg:
            assert 0 < float(str(r["p50_ms"])) <= float(str(r["p99_ms"])) <= float(str(r["max_ms"]))
            assert float(str(r["lag_p99_ms"])) >= 0
        index = _get(f"{base}/").decode()
        assert "echoswarm-hdr" in index and "echoswarm HDR" in index
        csv_text = _get(f"{base}/echoswarm/hdr.csv").decode()
        assert csv_text.startswith("request_type,name,count,failures,rps,p50_ms")

        chromium = require_tool("chromium")
        dom = subprocess.run(
            [
                chromium,
                *chromium_flags(tmp_path / "chrome"),
                "--virtual-time-budget=6000",
                "--dump-dom",
                f"{base}/?tab=echoswarm-hdr",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert "sender lag p99 ms" in dom and ">msg<" in dom
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
        log.close()
    assert rc == 130
