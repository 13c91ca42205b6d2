"""Reading ECHOSWARM_SERVERS from a locustfile without importing it."""

from __future__ import annotations

from pathlib import Path

import pytest

from echoswarm.orchestrate.scenario import ScenarioError, read_servers


def _write(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "scenario.py"
    f.write_text("import locust\n" + body)
    return f


def test_reads_declaration_and_numbers_repeated_kinds(tmp_path: Path) -> None:
    f = _write(
        tmp_path,
        'ECHOSWARM_SERVERS = [{"kind": "ws", "option": "--ws-url", "args": ["--work", "stats"]},\n'
        '    {"kind": "ws", "option": "--ws-before-url", "args": ["--reply", "before"]},\n'
        '    {"kind": "tcp", "option": "--tcp-target", "name": "zoo"}]\n',
    )
    specs = read_servers(f)
    assert [(s.kind, s.option, s.args, s.label) for s in specs] == [
        ("ws", "--ws-url", ("--work", "stats"), "ws-1"),
        ("ws", "--ws-before-url", ("--reply", "before"), "ws-2"),
        ("tcp", "--tcp-target", (), "zoo"),
    ]


def test_no_declaration_means_no_servers(tmp_path: Path) -> None:
    assert read_servers(_write(tmp_path, "X = 1\n")) == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("ECHOSWARM_SERVERS = make()\n", "literal"),
        ('ECHOSWARM_SERVERS = [{"kind": "http", "option": "--x"}]\n', "kind must be"),
        ('ECHOSWARM_SERVERS = [{"kind": "tcp", "option": "x"}]\n', "--flag"),
        ('ECHOSWARM_SERVERS = [{"kind": "tcp", "option": "--t", "args": "--model"}]\n', "args"),
        ("ECHOSWARM_SERVERS = (\n", "syntax error"),
    ],
)
def test_malformed_declarations(tmp_path: Path, body: str, why: str) -> None:
    with pytest.raises(ScenarioError, match=why):
        read_servers(_write(tmp_path, body))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="not found"):
        read_servers(tmp_path / "nope.py")
