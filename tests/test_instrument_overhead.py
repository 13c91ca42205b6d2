"""The instrument's overhead travels from `python -m bench overhead` to a run's run.json:
the file the benchmark saves is the file `run`/`demo --instrument-overhead` reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import overhead
from echoswarm import __main__ as cli
from echoswarm.orchestrate import instrument


def _runs(ours_p50: float, ref_p50: float, ours_p99: float, ref_p99: float) -> dict:
    def one(p50: float, p99: float) -> dict:
        return {"p50_ms": p50, "p99_ms": p99, "lag_p50_ms": 0.0, "lag_p99_ms": 0.0,
                "cpu_us_per_msg": 10.0, "failures": 0}  # fmt: skip

    return {"ours": [one(ours_p50, ours_p99)], "reference": [one(ref_p50, ref_p99)]}


def test_what_the_benchmark_saves_is_what_a_run_reads(tmp_path: Path) -> None:
    plan = overhead.OverheadPlan(transports=["grpc", "tcp"], streams=240, seconds=15.0, rounds=1)
    found = {"grpc": _runs(0.92, 0.72, 6.97, 2.50), "tcp": _runs(0.30, 0.20, 2.0, 1.5)}
    path = overhead.save(plan, found, tmp_path / "o" / "overhead.json")
    loaded = instrument.load(path)
    assert set(loaded) == {"grpc", "tcp"}
    assert loaded["grpc"]["p50_ms"] == pytest.approx(0.20)
    assert loaded["grpc"]["p99_ms"] == pytest.approx(4.47)
    assert loaded["tcp"]["streams"] == 240 and loaded["tcp"]["measured_utc"]
    assert loaded["tcp"]["source"].startswith("python -m bench")


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "not found"),
        ("{not json", "unreadable"),
        ('{"transports": {}}', "no per-transport figures"),
        ('{"transports": {"tcp": {"p50_ms": "fast", "p99_ms": 1}}}', "tcp p50_ms is not a number"),
    ],
)
def test_a_bad_overhead_file_is_one_usage_line(
    tmp_path: Path, content: str | None, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "overhead.json"
    if content is not None:
        f.write_text(content)
    results = tmp_path / "never"
    code = cli.main(["demo", "--instrument-overhead", str(f), "--results", str(results)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and why in err[0], err
    assert not results.exists()


def test_the_config_file_can_name_it(tmp_path: Path) -> None:
    f = tmp_path / "overhead.json"
    f.write_text(json.dumps({"transports": {"ws": {"p50_ms": 0.1, "p99_ms": 0.4}}}))
    conf = tmp_path / "echoswarm.toml"
    conf.write_text(f'instrument_overhead = "{f}"\n')
    ns = cli.build_parser().parse_args(["demo", "--config", str(conf)])
    cfg = cli.make_config(ns, [], [])
    assert cfg.instrument_overhead is not None
    assert cfg.instrument_overhead["ws"]["p99_ms"] == 0.4
