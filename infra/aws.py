"""The boto3 session of one command: credential chain, region, clients, progress and polling.

Endpoints are never passed explicitly: boto3 reads ``AWS_ENDPOINT_URL`` (and the per-service
variants) itself, which is how the tests point everything at a local moto server.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import botocore.exceptions
import botocore.loaders
import botocore.session
from botocore.config import Config

from infra import interrupt
from infra.spec import InfraError, UsageError

T = TypeVar("T")
CLIENT_CONFIG = Config(
    retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60
)


_LOADER = botocore.loaders.create_loader()


def progress(message: str) -> None:
    """One progress line on stderr (stdout stays for results: the run id, tables).

    A terminal that went away (SIGHUP: EIO; a closed pipe: EPIPE) must not turn a progress
    line into a failure — least of all while rolling back.
    """
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        pass


def check_region(region: str) -> str:
    """An AWS region with EC2, from botocore's bundled endpoint data (offline)."""
    core = botocore.session.Session()
    core.register_component("data_loader", _LOADER)
    if region not in core.get_available_regions("ec2"):
        raise UsageError(f"--region {region!r}: not an AWS region with EC2")
    return region


class Cloud:
    """Clients for one region, created on first use; ``account`` comes from STS."""

    def __init__(self, region: str, profile: str | None = None) -> None:
        try:
            core = botocore.session.Session(profile=profile)
            if profile and profile not in core.available_profiles:
                raise botocore.exceptions.ProfileNotFound(profile=profile)
            # One parsed copy of the service models per process (parsing EC2's is ~1 s).
            core.register_component("data_loader", _LOADER)
            # A signal noted during a call is raised before the next one (infra.interrupt).
            core.register("before-call", interrupt.checkpoint)
            self.session = boto3.Session(botocore_session=core, region_name=region)
        except botocore.exceptions.ProfileNotFound as e:
            raise UsageError(f"--profile: {e}") from None
        check_region(region)
        self.region = region
        self._clients: dict[str, Any] = {}
        self._account: str | None = None

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]
        return self._clients[service]

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def iam(self) -> Any:
        return self.client("iam")

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def ssm(self) -> Any:
        return self.client("ssm")

    @property
    def account(self) -> str:
        """The caller's account id; also the credentials check (one clear line if missing)."""
        if self._account is None:
            if self.session.get_credentials() is None:
                raise InfraError(
                    "no AWS credentials found (env vars, ~/.aws, --profile, SSO or an "
                    "instance role are looked at, in the standard order)"
                )
            try:
                self._account = self.client("sts").get_caller_identity()["Account"]
            except botocore.exceptions.ClientError as e:
                raise InfraError(f"AWS rejected the credentials: {error_text(e)}") from None
        return self._account


def error_code(e: BaseException) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        return str(e.response.get("Error", {}).get("Code", ""))
    return ""


def error_text(e: BaseException) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        err = e.response.get("Error", {})
        op = getattr(e, "operation_name", "")
        return f"{op}: {err.get('Code', '?')}: {err.get('Message', '')}".strip()
    return f"{type(e).__name__}: {e}"


def ignore_missing(fn: Callable[..., T], *args: Any, codes: tuple[str, ...], **kw: Any) -> T | None:
    """Call ``fn``; a "not found" error in ``codes`` means it is already gone (idempotent)."""
    try:
        return fn(*args, **kw)
    except botocore.exceptions.ClientError as e:
        if error_code(e) in codes:
            return None
        raise


def poll(
    what: str,
    check: Callable[[], tuple[bool, str]],
    *,
    timeout: float,
    interval: float = 5.0,
    first_interval: float = 0.5,
) -> None:
    """Call ``check`` until it says done, printing its status when it changes; bounded in time.

    The first re-check comes quickly (a fake or fast API is done at once); later ones back off
    to ``interval`` to stay well inside API rate limits.
    """
    start = time.monotonic()
    last = ""
    delay = first_interval
    while True:
        done, status = check()
        elapsed = time.monotonic() - start
        if status != last:
            progress(f"  {what}: {status} ({elapsed:.0f} s)")
            last = status
        if done:
            return
        if elapsed > timeout:
            raise InfraError(f"timed out after {timeout:.0f} s waiting for {what} ({status})")
        interrupt.sleep(min(delay, max(0.0, timeout - elapsed) + 0.01))
        delay = min(interval, delay * 2)
