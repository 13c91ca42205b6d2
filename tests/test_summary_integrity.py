"""summary.csv is vouched for by run.json (row count and sha256, written after the summary), so a
summary cut at a row boundary — which still parses — is refused, not reported as the whole run.

Directories are written by the real writer; the CLI runs as a subprocess, as a user runs it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

import analysis
from echoswarm import results
from echoswarm.measure import Sample, now_ns, to_epoch_ns
from echoswarm.results import ResultsError, ResultsWarning, ResultsWriter, read_summary
from echoswarm.results.aggregate import Aggregate
from echoswarm.results.recorder import Recorder
from tests import procs
from tests.analysis_runs import write_run

pytestmark = pytest.mark.timeout(60)
ROWS = ("connect", "msg", "session")


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    rows = {("tcp", name): rng.integers(500_000, 9_000_000, 300) for name in ROWS}
    return write_run(tmp_path_factory.mktemp("w") / "whole", rows)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [procs.PYTHON, "-m", "analysis", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=procs.ROOT,
        env=procs.env(),
    )


def _check(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())["summary_csv"]


def _matches(run_dir: Path) -> bool:
    data = (run_dir / "summary.csv").read_bytes()
    check = dict(_check(run_dir))
    check.pop("previous")
    return check == {"rows": data.count(b"\n") - 1, "sha256": hashlib.sha256(data).hexdigest()}


def test_writer_records_rows_and_checksum_after_every_summary(tmp_path: Path) -> None:
    t0 = now_ns() - 3_000_000_000
    writer = ResultsWriter(tmp_path / "run", {"scenario": "t"}, to_epoch_ns(t0) / 1e9)
    assert _matches(tmp_path / "run") and _check(tmp_path / "run")["rows"] == 0
    agg, rec = Aggregate(), Recorder()
    for i, name in enumerate(ROWS):
        rec.record(Sample("tcp", name, t0 + i * 1_000_000, 2_000_000, 10))
        agg.merge("local", 0, rec.harvest(), 0.0)
        writer.update(agg, to_epoch_ns(t0) / 1e9 + 1, 1.0, {}, {"count": agg.count})
        assert _matches(tmp_path / "run") and _check(tmp_path / "run")["rows"] == i + 1
    writer.finalize(agg, to_epoch_ns(t0) / 1e9 + 2, 2.0, {}, {}, "complete")
    assert _matches(tmp_path / "run") and len(read_summary(tmp_path / "run")) == 3
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_a_summary_cut_at_a_row_boundary_is_refused(whole: Path, tmp_path: Path) -> None:
    cut = _copy(whole, tmp_path / "cut")
    lines = (cut / "summary.csv").read_bytes().splitlines(keepends=True)
    assert len(lines) == 1 + len(ROWS)
    (cut / "summary.csv").write_bytes(b"".join(lines[:-1]))  # still a well-formed CSV
    expect = "summary.csv: cut short or altered: 2 data rows where run.json records 3"
    with pytest.raises(ResultsError, match=expect):
        read_summary(cut)
    with pytest.raises(ResultsError, match=expect):
        analysis.load(cut)
    for argv in (["report", str(cut)], ["compare", str(whole), str(cut)]):
        out = _cli(*argv)
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and expect in out.stderr, out.stderr
        assert out.stdout == ""
    assert not (cut / "report.html").exists() and not (cut / "report.md").exists()
    # cut inside a row: the same refusal, not a parse error about one line
    (cut / "summary.csv").write_bytes(b"".join(lines)[:-20])
    with pytest.raises(ResultsError, match="cut short: it ends inside a row"):
        read_summary(cut)
    # the whole one reads, reports and compares cleanly
    out = _cli("compare", str(whole), str(whole), "--plot", str(tmp_path / "c.png"))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    out = _cli("report", str(whole))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "3 rows, matches the row count and sha256" in (whole / "report.md").read_text()


def test_an_altered_summary_is_refused(whole: Path, tmp_path: Path) -> None:
    changed = _copy(whole, tmp_path / "changed")
    text = (changed / "summary.csv").read_text()
    row = text.splitlines()[2].split(",")
    row[2] = str(int(row[2]) + 1)  # one more sample than the run counted
    (changed / "summary.csv").write_text(text.replace(text.splitlines()[2], ",".join(row)))
    with pytest.raises(ResultsError, match=r"summary.csv: altered: its sha256 .* \(3 rows\)"):
        read_summary(changed)
    bad = _copy(whole, tmp_path / "bad-check")
    meta = json.loads((bad / "run.json").read_text())
    meta["summary_csv"] = "yes"
    (bad / "run.json").write_text(json.dumps(meta))
    out = _cli("report", str(bad))
    assert out.returncode == 2 and "run.json: corrupt ('summary_csv'" in out.stderr


def test_older_directories_are_read_with_one_warning(whole: Path, tmp_path: Path) -> None:
    old = _copy(whole, tmp_path / "old")
    meta = json.loads((old / "run.json").read_text())
    del meta["summary_csv"]
    (old / "run.json").write_text(json.dumps(meta))
    with pytest.warns(ResultsWarning, match="cannot be detected"):
        assert len(read_summary(old)) == 3
    out = _cli("report", str(old))
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(
        "python -m analysis report: warning: "
    )
    assert "summary.csv**: not checked" in (old / "report.md").read_text()
    # still refuses what it can see is broken
    (old / "summary.csv").write_text("a,b\n1,2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResultsWarning)
        with pytest.raises(ResultsError, match="summary.csv: corrupt"):
            read_summary(old)


def test_every_state_the_writer_passes_through_is_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop the writer after each file it replaces (as a kill would) and read the directory:
    the summary on disk is always one run.json vouches for, and "complete" comes only with
    the final summary in place."""
    t0 = now_ns() - 3_000_000_000
    run_dir = tmp_path / "run"
    writer = ResultsWriter(run_dir, {"scenario": "t"}, to_epoch_ns(t0) / 1e9)
    agg, rec = Aggregate(), Recorder()
    seen: list[tuple[str, str, int]] = []  # after each replace: file, status, summary rows
    real_replace = os.replace

    def replace_then_read(src: object, dst: object) -> None:
        real_replace(src, dst)  # type: ignore[arg-type]
        name = Path(str(dst)).name
        if name in ("run.json", "summary.csv"):
            status = json.loads((run_dir / "run.json").read_text())["status"]
            seen.append((name, status, len(read_summary(run_dir))))

    monkeypatch.setattr(os, "replace", replace_then_read)  # the writer renames with it
    for i, name in enumerate(ROWS):
        rec.record(Sample("tcp", name, t0 + i * 1_000_000, 2_000_000, 10))
        agg.merge("local", 0, rec.harvest(), 0.0)
        writer.update(agg, to_epoch_ns(t0) / 1e9 + 1, 1.0, {}, {})
    writer.finalize(agg, to_epoch_ns(t0) / 1e9 + 2, 2.0, {}, {}, "complete")
    monkeypatch.undo()
    # between run.json and the rename the previous summary is read; then the new one
    assert seen[:6] == [
        ("run.json", "running", 0),
        ("summary.csv", "running", 1),
        ("run.json", "running", 1),
        ("summary.csv", "running", 2),
        ("run.json", "running", 2),
        ("summary.csv", "running", 3),
    ]
    assert seen[-3:] == [
        ("run.json", "running", 3),
        ("summary.csv", "running", 3),
        ("run.json", "complete", 3),
    ]
    assert _check(run_dir)["previous"] is None  # a finished run vouches for one summary only
    # so the previous summary of a finished run is refused
    previous, _ = results.summary_csv_bytes([])
    (run_dir / "summary.csv").write_bytes(previous)
    with pytest.raises(ResultsError, match="0 data rows where run.json records 3"):
        read_summary(run_dir)
