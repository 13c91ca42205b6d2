"""Run options from echoswarm.toml / conf files; flags override the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from echoswarm.__main__ import main
from echoswarm.orchestrate import config


def test_toml_run_table(tmp_path: Path) -> None:
    f = tmp_path / "echoswarm.toml"
    f.write_text(
        '[run]\nworkers = 3\nspawn-rate = 5\ntime = "2m"\n'
        'slo = ["grpc:bidi msg:p99<20ms"]\nlocust_args = ["--mode", "pingpong"]\n'
    )
    opts = config.load(f)
    assert opts == {
        "workers": 3,
        "spawn_rate": 5.0,
        "time": "2m",
        "slo": ["grpc:bidi msg:p99<20ms"],
        "locust_args": ["--mode", "pingpong"],
    }


def test_conf_style_repeats_list_keys(tmp_path: Path) -> None:
    f = tmp_path / "run.conf"
    f.write_text(
        "# comment\nusers = 40\nslo = grpc:bidi msg:p99<20ms\nslo = *:*:error_rate<1%\n"
        "web = yes\nlocust-args = --mode pingpong\n"
    )
    opts = config.load(f)
    assert opts["users"] == 40 and opts["web"] is True
    assert opts["slo"] == ["grpc:bidi msg:p99<20ms", "*:*:error_rate<1%"]
    assert opts["locust_args"] == ["--mode", "pingpong"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[run]\nworkerz = 2\n", "unknown option"),
        ("[run]\nworkers = 'two'\n", "not a valid int"),
        ("[run\n", "echoswarm.toml"),
    ],
)
def test_bad_files_raise_config_error(tmp_path: Path, text: str, why: str) -> None:
    f = tmp_path / "echoswarm.toml"
    f.write_text(text)
    with pytest.raises(config.ConfigError, match=why):
        config.load(f)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")


def test_flags_override_file_and_bad_file_values_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "echoswarm.toml"
    f.write_text('[run]\nslo = ["nonsense"]\nworkers = 0\n')
    lf = tmp_path / "scenario.py"
    lf.write_text("import locust\n")
    rc = main(["run", str(lf), "--config", str(f), "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "bad SLO" in err
