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
    """Every dotted name ``path`` imports (at any depth: lazy imports and ``TYPE_CHECKING``
    blocks count): ``import a.b`` → ``a.b``; ``from a import b`` → ``a.b`` (a module or a name
    of ``a``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{p.relative_to(ROOT)} imports {name}"
        for p in modules(folder)
        for name in sorted(imported(p))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
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


PACKAGES = ("echoswarm", "servers", "analysis", "infra", "bench", "locustfiles", "protos")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (:func:`imported`, each name resolved to the
    longest module it starts with: ``from pkg import name`` is an arrow to ``pkg.name`` when
    that is a module, else to ``pkg``). Python's implicit import of a parent package is not an
    arrow (a package's ``__init__`` re-exporting its modules is not a cycle)."""
    files = {module_name(p): p for folder in PACKAGES for p in modules(folder)}

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if (candidate := ".".join(parts[:n])) in files:
                return candidate
        return None

    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        graph[mod] = {t for n in imported(path) if (t := resolve(n)) and t != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 100  # the whole project was read
    assert cycles(graph) == []


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
