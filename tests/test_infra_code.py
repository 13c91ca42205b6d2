"""What ships to S3 and every node: tracked files with their working-tree content, ``--include``
paths on request, never an untracked file otherwise, never a secret-looking file; VERSION.json
lists every shipped file with its hash. Built from a scratch git repository in tmp_path (the
real checkout is never touched); ``up``'s refusals here, the tarball ``up`` really ships is
checked in test_infra.py's hardening test."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from infra import tarball
from infra.spec import UsageError
from tests.infra_fixtures import (
    aws,  # noqa: F401  (fixture)
    infra,
    moto_url,  # noqa: F401  (fixture)
    snapshot,
    tar_members,
)

pytestmark = pytest.mark.timeout(60)
SECRET = "AKIAEXAMPLESECRET-do-not-ship"


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args],
        cwd=root,
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    files = {
        "app.py": "print('committed')\n",
        "lib/util.py": "X = 1\n",
        "gone.py": "deleted on disk later\n",
        "config/.env.production": f"KEY={SECRET}\n",  # a secret someone committed
        ".gitignore": "*.log\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "base")
    (root / "app.py").write_text("print('edited, not committed')\n")
    (root / "gone.py").unlink()
    (root / ".env").write_text(f"AWS_SECRET_ACCESS_KEY={SECRET}\n")
    (root / "notes.txt").write_text("untracked, not ignored\n")
    (root / "debug.log").write_text("ignored\n")
    (root / "data").mkdir()
    (root / "data" / "frames.csv").write_text("a,b\n")
    (root / "data" / "server.key").write_text(SECRET)
    return root


def test_only_tracked_files_ship_with_their_working_tree_content(repo: Path) -> None:
    blob, version = tarball.build(root=repo)
    members = tar_members(blob)
    assert sorted(members) == [".gitignore", "VERSION.json", "app.py", "lib/util.py"]
    assert members["app.py"] == b"print('edited, not committed')\n"
    assert all(SECRET.encode() not in body for body in members.values())
    shipped = json.loads(members["VERSION.json"])
    assert shipped == version
    assert shipped["dirty"] == ["app.py", "gone.py"]
    assert shipped["withheld"] == ["config/.env.production"]
    assert shipped["included"] == []
    assert shipped["untracked_not_shipped"] == 4  # .env, notes.txt, data/*
    assert shipped["files"] == {
        name: hashlib.sha256(body).hexdigest()
        for name, body in members.items()
        if name != "VERSION.json"
    }
    assert "untracked" in shipped["rule"]


def test_include_is_the_explicit_opt_in_and_never_takes_a_secret(repo: Path) -> None:
    include = tarball.check_includes(["notes.txt", "data/"], root=repo)
    assert include == ["data", "notes.txt"]
    blob, version = tarball.build(include, root=repo)
    members = tar_members(blob)
    assert {"notes.txt", "data/frames.csv"} <= set(members)
    assert "data/server.key" not in members and ".env" not in members
    assert version["included"] == ["data/frames.csv", "notes.txt"]
    assert version["withheld"] == ["config/.env.production", "data/server.key"]
    assert version["untracked_not_shipped"] == 1  # .env
    for bad, why in (
        (".env", "looks like a secret"),
        ("data/server.key", "looks like a secret"),
        ("../outside.txt", "outside the repository"),
        ("/etc/hostname", "outside the repository"),
        ("missing.txt", "no such file"),
        (".", "refused"),
    ):
        with pytest.raises(UsageError, match=why):
            tarball.check_includes([bad], root=repo)


def test_up_refuses_a_secret_or_outside_include_before_anything_exists(aws: str) -> None:  # noqa: F811
    before = snapshot()
    for argv in (["up", "--include", ".env"], ["up", "--include", "/etc/hostname"]):
        r = infra(*argv)
        assert r.rc == 2 and len(r.err.strip().splitlines()) == 1, (argv, r.err)
    assert snapshot() == before
