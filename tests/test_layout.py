"""The package structure's rules (docs/ARCHITECTURE.md), checked on the source: who may import
whom, what stays free of gevent, and module size."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATED = {"echo_pb2.py", "echo_pb2_grpc.py"}


def modules(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if p.name not in GENERATED)


def imported(path: Path) -> set[str]:
    """Every module name ``path`` imports (at any depth, lazily or not)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{p.relative_to(ROOT)} imports {name}"
        for p in modules(folder)
        for name in sorted(imported(p))
        if name.split(".")[0] in forbidden or name in forbidden
    ]


def test_echoswarm_never_imports_analysis_servers_bench_or_infra() -> None:
    assert offenders("echoswarm", ("analysis", "servers", "bench", "infra")) == []


def test_the_stream_core_and_grpc_driver_are_free_of_gevent_and_locust() -> None:
    bad = offenders("echoswarm/streams", ("gevent", "locust", "echoswarm.users"))
    bad += offenders("echoswarm/results", ("gevent", "locust", "echoswarm.users"))
    assert bad == []


def test_locustfiles_use_only_the_public_users_api() -> None:
    bad = [
        f"{p.relative_to(ROOT)} imports {name}"
        for p in modules("locustfiles")
        for name in imported(p)
        if name.startswith("echoswarm")
        and not name.startswith("echoswarm.users")
        or name.startswith("echoswarm.users.")
        and name.split(".")[2] not in _public_names()
    ]
    assert bad == []


def _public_names() -> set[str]:
    init = ast.parse((ROOT / "echoswarm/users/__init__.py").read_text())
    for node in init.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return {ast.literal_eval(e) for e in node.value.elts}  # type: ignore[attr-defined]
    return set()


@pytest.mark.parametrize("folder", ["echoswarm", "servers", "analysis", "infra", "bench"])
def test_no_hand_written_module_is_over_600_lines(folder: str) -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in modules(folder)
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert long == {}


def test_no_merge_conflict_markers_are_left_in_the_tree() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    marker = re.compile(r"^(<{7} |>{7} |={7}$)", re.M)
    bad = [
        name
        for name in tracked
        if name.endswith((".py", ".md", ".txt", ".toml", ".sh", ".yml", ".yaml", ".service"))
        and marker.search((ROOT / name).read_text(errors="replace"))
    ]
    assert bad == []
