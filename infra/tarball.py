"""The code tarball every node runs: which files ship, and the ``VERSION.json`` that says so.

The rule (one place, here):

- the files git **tracks**, with their **working-tree** content — uncommitted edits to tracked
  files ship, so what was run locally is what the nodes run; a tracked file deleted on disk does
  not;
- **untracked files never ship** (not even non-ignored ones: a stray ``.env`` or a notes file
  must not reach S3 and every node) unless named with ``--include PATH`` (a file, or a directory
  whose files all go) — the explicit opt-in;
- files that **look like secrets never ship**, tracked or included: names like ``.env``,
  ``.env.*``, ``*.pem``, ``*.key``, ``id_rsa*``, ``.netrc``, ``credentials`` and anything under
  ``.aws/``, ``.ssh/``, ``.gnupg/`` (:data:`SECRET_NAMES`, :data:`SECRET_DIRS`). A tracked one is
  withheld and listed; naming one with ``--include`` is refused.

``VERSION.json`` (in the tarball and echoed in the object's metadata) records HEAD's commit,
the tracked files whose content differs from it (``dirty``), every shipped file with its
SHA-256, what came in through ``--include``, what was withheld, and how many untracked files
stayed home. Members carry no local user or group names.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from infra.spec import InfraError, UsageError

ROOT = Path(__file__).resolve().parent.parent
RULE = (
    "tracked files with their working-tree content, plus --include paths; "
    "untracked files stay home; secret-looking files never ship"
)
SECRET_NAMES = (
    ".env",
    ".env.*",
    ".envrc",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "*.tfstate",
    "*.tfstate.*",
    "*.tfvars",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".netrc",
    ".pgpass",
    ".pypirc",
    ".npmrc",
    ".htpasswd",
    ".git-credentials",
    "credentials",
    "credentials.json",
)
SECRET_DIRS = frozenset({".git", ".aws", ".ssh", ".gnupg", ".docker", ".kube", ".azure"})


def looks_secret(rel: str) -> bool:
    """True for a repository-relative path that must never leave this machine."""
    parts = PurePosixPath(rel).parts
    if any(p in SECRET_DIRS for p in parts[:-1]):
        return True
    name = parts[-1].lower() if parts else ""
    return name in SECRET_DIRS or any(fnmatch.fnmatchcase(name, pat) for pat in SECRET_NAMES)


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, check=True, capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or e
        raise InfraError(f"git {' '.join(args)} failed in {root}: {detail}".strip()) from None


def _z(text: str) -> list[str]:
    return sorted(set(text.split("\0")) - {""})


def check_includes(paths: Iterable[str], root: Path = ROOT) -> list[str]:
    """``--include`` paths → repository-relative POSIX paths; refuses (exit 2) a path that is
    missing, outside the repository, or looks like a secret."""
    out = []
    for text in paths:
        given = Path(text)
        # The secret check comes first and needs no file: a refused name is refused everywhere.
        if looks_secret(given.as_posix()):
            raise UsageError(f"--include {text}: looks like a secret; it never ships")
        full = (given if given.is_absolute() else root / given).resolve()
        if full != root and root not in full.parents:
            raise UsageError(f"--include {text}: outside the repository {root}")
        if not full.exists():
            raise UsageError(f"--include {text}: no such file or directory")
        rel = full.relative_to(root).as_posix()
        if rel == "." or looks_secret(rel):
            raise UsageError(f"--include {text}: refused (the whole repository, or secret-looking)")
        out.append(rel)
    return sorted(set(out))


@dataclass
class Selection:
    """What ships: ``files`` (sorted), ``included`` (beyond the tracked ones), ``withheld``."""

    files: list[str] = field(default_factory=list)
    included: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)
    untracked_left: int = 0


def _walk(root: Path, rel: str) -> list[str]:
    """Files (and symlinks, as links) under an included path; never descends into a symlinked
    directory or a secret directory."""
    top = root / rel
    if not top.is_dir():
        return [rel]
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if (here / d).is_symlink():
                found.append((here / d).relative_to(root).as_posix())
            elif d not in SECRET_DIRS:
                keep.append(d)
        dirnames[:] = keep
        found += [(here / n).relative_to(root).as_posix() for n in filenames]
    return found


def select(include: Iterable[str] = (), root: Path = ROOT) -> Selection:
    tracked = _z(_git(root, "ls-files", "-z", "--cached"))
    untracked = set(_z(_git(root, "ls-files", "-z", "--others", "--exclude-standard")))
    extra = {f for rel in include for f in _walk(root, rel)} - set(tracked)
    sel = Selection()
    for rel in sorted(set(tracked) | extra):
        path = root / rel
        if not (path.is_symlink() or path.is_file()):
            continue  # a tracked file deleted on disk (or a submodule directory) is absent
        if looks_secret(rel):
            sel.withheld.append(rel)
            continue
        sel.files.append(rel)
        if rel in extra:
            sel.included.append(rel)
    sel.untracked_left = len(untracked - extra)
    return sel


def _digest(path: Path) -> str:
    if path.is_symlink():
        return "symlink:" + os.readlink(path)
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def manifest(include: Iterable[str] = (), root: Path = ROOT) -> dict[str, Any]:
    """The VERSION.json content for the files that would ship now."""
    sel = select(include, root)
    return {
        "commit": _git(root, "rev-parse", "HEAD").strip(),
        "rule": RULE,
        "dirty": _z(_git(root, "diff", "--name-only", "-z", "HEAD")),
        "files": {rel: _digest(root / rel) for rel in sel.files},
        "included": sel.included,
        "withheld": sel.withheld,
        "untracked_not_shipped": sel.untracked_left,
    }


def build(include: Iterable[str] = (), root: Path = ROOT) -> tuple[bytes, dict[str, Any]]:
    """The gzipped tarball (in memory) and its VERSION.json content."""
    version = manifest(include, root)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel in version["files"]:
            tar.add(root / rel, arcname=rel, recursive=False, filter=_anonymous)
        blob = json.dumps(version, indent=2).encode()
        info = tarfile.TarInfo("VERSION.json")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue(), version


def describe(version: dict[str, Any]) -> list[str]:
    """Progress lines: what shipped, what stayed home and why."""
    lines = [
        f"code {version['commit'][:12]}: {len(version['files'])} file(s)"
        + (f", {len(version['dirty'])} with uncommitted changes" if version["dirty"] else "")
        + (f", {len(version['included'])} from --include" if version["included"] else "")
    ]
    if version["withheld"]:
        lines.append(f"withheld (secret-looking): {', '.join(version['withheld'])}")
    if version["untracked_not_shipped"]:
        lines.append(
            f"{version['untracked_not_shipped']} untracked file(s) not shipped "
            "(--include PATH ships one)"
        )
    return lines
