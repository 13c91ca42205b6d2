"""Every numeric flag of every server kind has a finite range: a value outside it — negative,
NaN, infinite, absurdly large, not a number — is one line on stderr and exit 2, before anything
starts. The ranges are pinned here (they are the documented contract, README "Servers").

The parser is exercised in-process (``servers.__main__.build_parser``: the exact object the
command line uses; a bad value raises SystemExit(2) before any server code runs); the cases the
audit hit are also run end to end as ``python -m servers ...``.
"""

from __future__ import annotations

import math
import subprocess

import pytest

from servers.__main__ import build_parser
from tests import procs

pytestmark = pytest.mark.timeout(60)
MiB = 1024 * 1024

# flag -> (lowest, highest, integer?) per kind
COMMON = {"--port": (0, 65535, True), "--delay-ms": (0, 60_000, False)}
LIMITS: dict[str, dict[str, tuple[float, float, bool]]] = {
    "grpc": {
        **COMMON,
        "--threads": (1, 10_000, True),
        "--max-message-bytes": (1, 256 * MiB, True),
        "--handshake-timeout-s": (0.001, 3600, False),
        "--grace-s": (0, 600, False),
        "--stream-memory-bytes": (MiB, 64 * 1024 * MiB, True),
        "--delay-buffer-bytes": (64 * 1024, 1024 * MiB, True),
    },
    "ws": {
        **COMMON,
        "--max-size": (1, 256 * MiB, True),
        "--workers": (1, 256, True),
        "--backlog": (1, 65535, True),
        "--open-timeout-s": (0, 3600, False),
        "--grace-s": (0, 600, False),
        "--delay-buffer-bytes": (64 * 1024, 1024 * MiB, True),
    },
    "tcp": {
        **COMMON,
        "--workers": (1, 1024, True),
        "--backlog": (1, 65535, True),
        "--max-connections": (0, 1_000_000, True),
    },
}


def show(value: float, integer: bool) -> str:
    return str(int(value)) if integer else repr(value)


def bad_values(lo: float, hi: float, integer: bool) -> list[str]:
    values = ["nan", "inf", "-inf", "1e400", "ten", "", str(10**30), show(hi + 1, integer)]
    values.append(show(lo - 1, integer) if integer else repr(math.nextafter(lo, -math.inf)))
    if integer:
        values.append("1.5")
    return values


FLAGS = [(kind, flag) for kind, flags in LIMITS.items() for flag in flags]


def parse(argv: list[str]) -> object:
    return build_parser(argv).parse_args(argv)


@pytest.mark.parametrize("kind, flag", FLAGS, ids="{}".format)
def test_out_of_range_is_one_line_exit_2(capsys, kind: str, flag: str) -> None:
    for value in bad_values(*LIMITS[kind][flag]):
        with pytest.raises(SystemExit) as info:
            parse([kind, f"{flag}={value}"])
        assert info.value.code == 2, value
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1, (value, err)
        assert flag in lines[0] and "error" in lines[0], (value, lines[0])


@pytest.mark.parametrize("kind, flag", FLAGS, ids="{}".format)
def test_both_ends_of_each_range_are_accepted(kind: str, flag: str) -> None:
    lo, hi, integer = LIMITS[kind][flag]
    for value in (lo, hi):
        args = parse([kind, flag, show(value, integer)])
        assert getattr(args, flag[2:].replace("-", "_")) == value


@pytest.mark.parametrize("kind", list(LIMITS))
def test_help_states_the_ranges(capsys, kind: str) -> None:
    with pytest.raises(SystemExit) as info:
        parse([kind, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, (lo, hi, integer) in LIMITS[kind].items():
        if flag != "--port" and integer and hi < MiB:  # byte sizes are shown in MiB/GiB
            assert f"{show(lo, integer)}..{show(hi, integer)}" in text, flag
    assert "0..60000 ms" in text and "0..65535" in text


@pytest.mark.parametrize("kind", ["grpc", "ws", "tcp"])
def test_infinite_delay_is_refused_end_to_end(kind: str) -> None:
    """The audit's cases: ``ws|grpc --delay-ms inf`` used to print a traceback, and
    ``tcp --delay-ms inf`` started a server that never replied."""
    result = subprocess.run(
        [procs.PYTHON, "-m", "servers", kind, "--port", "0", "--delay-ms", "inf"],
        cwd=procs.ROOT,
        env=procs.env(),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--delay-ms" in lines[0] and "0..60000" in lines[0], result.stderr
