"""What an EC2 node runs (and what a test runs locally): set up the venv, then one role.

- ``--role setup``: create the venv and install the pinned requirements (stdlib only: it runs
  from cloud-init before anything is installed);
- ``--role server --kind K --port P``: one echo server on all interfaces (exec);
- ``--role worker --master-host IP``: a Locust worker that takes the locustfile from the master
  (``-f -``), so workers need nothing per test (exec);
- ``--role master --config FILE``: one headless test as the run config says, ``live.json``
  uploaded every few seconds while it runs and the whole results directory at the end.

The argv of every role comes from :mod:`echoswarm.orchestrate.commands` — the same functions
the local orchestrator uses. ``--print-argv`` prints it as JSON instead of running it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Any, NoReturn

from echoswarm.argtypes import port_number
from echoswarm.orchestrate.commands import (
    SERVER_KINDS,
    master_argv,
    server_argv,
    target_value,
    worker_argv,
)

CODE_DIR = "/opt/echoswarm/code"
VENV_DIR = "/opt/echoswarm/venv"
LIVE_UPLOAD_EVERY_S = 5.0
WEB_AUTOQUIT_S = 60  # time to look at the final numbers in the web UI
MAX_PROCESSES = 256


def build_argv(args: argparse.Namespace, config: dict[str, Any]) -> list[str]:
    """The role's command line, from echoswarm.orchestrate.commands (nothing is re-spelled here)."""
    py = sys.executable
    if args.role == "server":
        return server_argv(
            args.kind, host=args.host, port=args.port, args=config.get("args", []), python=py
        )
    if args.role == "worker":
        procs = os.cpu_count() if args.processes == "auto" else int(args.processes or 0)
        return worker_argv(
            "-",
            master_host=args.master_host,
            master_port=args.master_port,
            processes=procs if procs and procs > 1 else None,
            python=py,
        )
    targets: list[str] = []
    for s in config.get("servers", []):
        targets += [s["option"], target_value(s["kind"], s["host"], int(s["port"]))]
    return master_argv(
        config["locustfile"],
        expect_workers=int(config["expect_workers"]),
        users=int(config["users"]),
        spawn_rate=float(config["spawn_rate"]),
        run_time=config["run_time"],
        results_dir=config["results_dir"],
        bind_host=config.get("bind_host", "0.0.0.0"),
        bind_port=int(config.get("bind_port", 5557)),
        web=bool(config.get("web")),
        web_host=config.get("web_host", "127.0.0.1"),  # loopback: reached by SSM port forward
        # with the web UI the master would stay up after the test: quit soon after it ends
        # --enable-rebalancing: a lost worker's users move to the others at once (as locally)
        extra=[*targets, "--enable-rebalancing"]
        + (["--autoquit", str(WEB_AUTOQUIT_S)] if config.get("web") else [])
        + list(config.get("extra", [])),
        python=py,
    )


def setup(code: Path, venv_dir: Path) -> int:
    """Create the venv (once) and install the pinned requirements into it."""
    if not (venv_dir / "bin" / "python").exists():
        venv.create(venv_dir, with_pip=True, clear=False)
    pip = [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    return subprocess.call([*pip, "--quiet", "-r", str(code / "requirements.txt")], cwd=code)


def _s3(region: str | None) -> Any:
    import boto3  # only the master uploads; setup must work before boto3 is installed

    return boto3.client("s3", region_name=region)


def run_master(config: dict[str, Any], argv: list[str]) -> int:
    """Run the master to completion, streaming live.json, then upload the results directory."""
    results = Path(config["results_dir"])
    if results.exists():
        shutil.rmtree(results)  # one directory per test: never mix a previous test's files
    results.mkdir(parents=True)
    bucket, prefix = config.get("bucket"), config.get("prefix", "")
    s3 = _s3(config.get("region")) if bucket else None
    child = subprocess.Popen(argv)
    forward = lambda signum, _frame: child.send_signal(signum)  # noqa: E731
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    live = results / "live.json"
    next_upload = time.monotonic()
    while True:
        try:
            rc = child.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            pass
        if s3 is not None and time.monotonic() >= next_upload and live.exists():
            next_upload = time.monotonic() + LIVE_UPLOAD_EVERY_S
            try:
                s3.upload_file(str(live), bucket, prefix + "live.json")
            except Exception as e:  # progress is best effort; the final upload is not
                print(f"node: live.json upload failed: {e}", file=sys.stderr)
    if s3 is not None and bucket:
        from infra.bucket import upload_dir

        n = upload_dir(s3, results, bucket, prefix)
        print(f"node: uploaded {n} result file(s) to s3://{bucket}/{prefix}", flush=True)
    return rc


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (not the usage block)
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def _processes(text: str) -> str:
    """``auto`` (one per CPU) or a count 1..256."""
    if text == "auto":
        return text
    if not text.isdigit() or not 1 <= int(text) <= MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto or 1..{MAX_PROCESSES}")
    return text


def _master_port(text: str) -> int:
    value = port_number(text)
    if value == 0:
        raise argparse.ArgumentTypeError("the master's port cannot be 0")
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m infra.node", description=__doc__.split("\n")[0])
    p.add_argument("--role", required=True, choices=("setup", "server", "worker", "master"))
    p.add_argument("--kind", choices=SERVER_KINDS, help="server kind")
    p.add_argument("--host", default="0.0.0.0", help="server bind address")
    p.add_argument("--port", type=port_number, default=0, help="server port (0: any)")
    p.add_argument("--master-host", help="worker: the master's (private) address")
    p.add_argument("--master-port", type=_master_port, default=5557)
    p.add_argument("--processes", type=_processes, help="worker: N or auto (one per CPU)")
    p.add_argument("--config", type=Path, help="JSON: master run config, or server {args: []}")
    p.add_argument("--code", type=Path, default=Path(CODE_DIR))
    p.add_argument("--venv", type=Path, default=Path(VENV_DIR))
    p.add_argument("--print-argv", action="store_true", help="print the command, do not run it")
    args = p.parse_args(argv)
    if args.role == "server" and not args.kind:
        p.error("--role server needs --kind")
    if args.role == "worker" and not args.master_host:
        p.error("--role worker needs --master-host")
    if args.role == "master" and not args.config:
        p.error("--role master needs --config")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.role == "setup":
        return setup(args.code, args.venv)
    config: dict[str, Any] = {}
    if args.config and args.config.exists():
        try:
            config = json.loads(args.config.read_text())
        except ValueError as e:
            print(f"node: {args.config}: not JSON ({e})", file=sys.stderr)
            return 2
    elif args.role == "master":
        print(f"node: {args.config}: no such file", file=sys.stderr)
        return 2
    try:
        cmd = build_argv(args, config)
    except (KeyError, ValueError) as e:
        print(f"node: bad {args.role} config: {e}", file=sys.stderr)
        return 2
    if args.print_argv:
        print(json.dumps(cmd))
        return 0
    if args.role == "master":
        return run_master(config, cmd)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)  # the unit's process becomes the server/worker: signals go straight in


if __name__ == "__main__":
    sys.exit(main())
