"""What a locustfile declares about itself, read without importing it.

A locustfile lists the echo servers it needs as a module-level literal::

    ECHOSWARM_SERVERS = [
        {"kind": "grpc", "option": "--grpc-target"},
        {"kind": "ws", "option": "--ws-url", "args": ["--work", "none"]},
    ]

The orchestrator reads it with ``ast.literal_eval`` (importing a locustfile would monkey-patch
this process with gevent and run its module code), starts each server on a free port and passes
its address to Locust as ``OPTION VALUE``.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from echoswarm.orchestrate.commands import SERVER_KINDS

DECLARATION = "ECHOSWARM_SERVERS"


class ScenarioError(ValueError):
    """The locustfile is missing or its declaration is malformed (a usage error)."""


@dataclass(frozen=True)
class ServerSpec:
    kind: str
    option: str
    args: tuple[str, ...] = field(default_factory=tuple)
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.kind


def read_servers(locustfile: Path) -> list[ServerSpec]:
    """The servers a locustfile declares (empty if it declares none)."""
    try:
        data = locustfile.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(f"locustfile not found: {locustfile}") from None
    except OSError as exc:
        raise ScenarioError(f"cannot read locustfile {locustfile}: {exc.strerror}") from None
    try:  # as Python reads source: UTF-8 unless a coding line says otherwise
        source = importlib.util.decode_source(data)
    except (UnicodeDecodeError, SyntaxError, LookupError) as exc:
        raise ScenarioError(
            f"{locustfile}: not readable as Python source ({_why(exc, data)}); save it as UTF-8"
        ) from None
    try:
        tree = ast.parse(source, filename=str(locustfile))
    except SyntaxError as exc:
        raise ScenarioError(f"{locustfile}:{exc.lineno}: syntax error: {exc.msg}") from None
    except ValueError as exc:  # e.g. a NUL byte
        raise ScenarioError(f"{locustfile}: not Python source ({exc})") from None
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if any(isinstance(t, ast.Name) and t.id == DECLARATION for t in targets):
            try:
                raw = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                # TypeError: a literal that cannot be built, e.g. a list as a dict key
                raise ScenarioError(
                    f"{locustfile}: {DECLARATION} must be a literal list of dicts"
                ) from None
            return _specs(locustfile, raw)
    return []


def _why(exc: Exception, data: bytes) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"byte 0x{exc.object[exc.start]:02x} at offset {exc.start} is not {exc.encoding}"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:  # the tokenizer's "invalid ... encoding declaration"
        return f"byte 0x{data[bad.start]:02x} at offset {bad.start} is not UTF-8"
    return str(exc)


def _specs(locustfile: Path, raw: object) -> list[ServerSpec]:
    if not isinstance(raw, list):
        raise ScenarioError(f"{locustfile}: {DECLARATION} must be a list")
    specs = []
    seen_options: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"{locustfile}: {DECLARATION}[{i}]"
        if not isinstance(entry, dict):
            raise ScenarioError(f"{where} must be a dict")
        kind, option = entry.get("kind"), entry.get("option")
        if kind not in SERVER_KINDS:
            raise ScenarioError(f"{where}: kind must be one of {', '.join(SERVER_KINDS)}")
        if not isinstance(option, str) or not option.startswith("--"):
            raise ScenarioError(f"{where}: option must be a --flag string")
        if option in seen_options:
            raise ScenarioError(f"{where}: option {option} declared twice")
        seen_options.add(option)
        args = entry.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ScenarioError(f"{where}: args must be a list of strings")
        name = entry.get("name", "")
        if not isinstance(name, str):
            raise ScenarioError(f"{where}: name must be a string")
        specs.append(ServerSpec(kind, option, tuple(args), name or f"{kind}{_suffix(i, raw)}"))
    return specs


def _suffix(i: int, raw: list[object]) -> str:
    """Number servers of a kind only when the kind repeats (ws, ws-2)."""
    kinds = [e.get("kind") if isinstance(e, dict) else None for e in raw]
    kind = kinds[i]
    if kinds.count(kind) == 1:
        return ""
    return f"-{kinds[: i + 1].count(kind)}"
