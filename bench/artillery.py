"""Our WebSocket user beside Artillery's WebSocket engine: CPU per message at 80 connections.

    python -m bench artillery [--conns 80]

Artillery 2.0.34 (npm, installed by the benchmark into ``build/artillery`` with
``--ignore-scripts`` the first time; needs ``npm``) runs 80 virtual users, each opening one
WebSocket to the same ``python -m servers ws`` and sending 3200-byte messages in a loop —
fire-and-forget: a step ends when the message is written, replies are only counted. Its CPU
(the node process and its children, from ``getrusage(RUSAGE_CHILDREN)``) is measured for two
loop lengths and differenced, so Node's start-up and the scenario's set-up cancel out: CPU per
send = ΔCPU / Δsends. Ours: ``WebSocketUser`` in ping-pong over 80 connections in a real
Locust runner with the results plugin on, every reply matched and checked (``bench.driver
pingpong``), CPU per round trip. Target (issue "Load-generator efficiency"): ours ≤ 0.5× Artillery
per message.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import BUILD, driver_argv, run_json

VERSION = "2.0.34"
HOME = BUILD / "artillery"
BIN = HOME / "node_modules" / ".bin" / "artillery"
TARGET_RATIO = 0.5
FRAME_BYTES = 3200


@dataclass
class ArtilleryPlan:
    conns: int = 80
    short_loop: int = 50  # sends per virtual user, the set-up run
    long_loop: int = 1000  # sends per virtual user, the measured run
    our_messages: int = 40_000


def ensure_installed() -> str:
    """The artillery command ("" and a reason when it cannot be installed here)."""
    if BIN.exists():
        return str(BIN)
    npm = shutil.which("npm")
    if npm is None:
        return ""
    HOME.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix", str(HOME),
         f"artillery@{VERSION}"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    return str(BIN) if proc.returncode == 0 and BIN.exists() else ""


def scenario(url: str, conns: int, loop: int) -> Path:
    """An Artillery script: ``conns`` users arrive at once, each sends ``loop`` messages."""
    payload = "x" * FRAME_BYTES
    path = BUILD / "bench" / f"artillery-{conns}-{loop}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'config:\n  target: "{url}"\n  phases:\n    - duration: 1\n      arrivalCount: {conns}\n'
        f"scenarios:\n  - engine: ws\n    flow:\n      - loop:\n"
        f'          - send: "{payload}"\n        count: {loop}\n'
    )
    return path


def _run_artillery(binary: str, script: Path) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [binary, "run", "--quiet", str(script)],
        capture_output=True, text=True, timeout=600, cwd=HOME,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"artillery exited {proc.returncode}: {tail[:160]}"}
    return {"cpu_s": cpu}


def measure(plan: ArtilleryPlan, url: str) -> dict[str, Any]:
    binary = ensure_installed()
    out: dict[str, Any] = {"conns": plan.conns}
    if not binary:
        out["artillery"] = {"error": f"artillery@{VERSION} not installed (npm missing or failed)"}
    else:
        short = _run_artillery(binary, scenario(url, plan.conns, plan.short_loop))
        long = _run_artillery(binary, scenario(url, plan.conns, plan.long_loop))
        if "error" in short or "error" in long:
            out["artillery"] = short if "error" in short else long
        else:
            sends = plan.conns * (plan.long_loop - plan.short_loop)
            out["artillery"] = {
                "sends": sends,
                "cpu_us_per_send": (long["cpu_s"] - short["cpu_s"]) * 1e6 / sends,
            }
    ours = run_json(
        driver_argv(
            "pingpong", "--client", "ours", "--transport", "ws", "--target", url,
            "--conns", str(plan.conns), "--warmup", "2000", "--messages", str(plan.our_messages),
        ),
        600,
    )  # fmt: skip
    if "error" in ours:
        out["ours"] = ours
    else:
        out["ours"] = {
            "messages": ours["messages"],
            "cpu_us_per_msg": ours["cpu_s"] * 1e6 / ours["messages"],
        }
    return out


def table(result: dict[str, Any]) -> str:
    art, ours = result["artillery"], result["ours"]
    lines = [f"WebSocket, {result['conns']} connections, {FRAME_BYTES} B messages, same server"]
    a = art.get("cpu_us_per_send")
    o = ours.get("cpu_us_per_msg")
    lines.append(
        f"  Artillery {VERSION} ws engine (fire-and-forget)   "
        + (f"{a:8.1f} us CPU per send" if a is not None else f"n/a: {art.get('error')}")
    )
    lines.append(
        "  echoswarm WebSocketUser (every reply matched)   "
        + (f"{o:8.1f} us CPU per round trip" if o is not None else f"n/a: {ours.get('error')}")
    )
    if a and o:
        ratio = o / a
        verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
        lines.append(f"  ours / Artillery = {ratio:.2f}x (target <= {TARGET_RATIO}x: {verdict})")
    return "\n".join(lines)
