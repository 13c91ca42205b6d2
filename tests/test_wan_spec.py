"""The WAN emulator's parts that need no sockets: the spec parser (flags and the ``--wan``
contract string), the timing model (link rate, delay, jitter that never reorders), the command
line the orchestrator builds, and the LISTENING-line reader."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echoswarm import wan
from echoswarm.wan.path import MIN_PIECE_BYTES, Link, Path
from echoswarm.wan.spec import (
    WanSpec,
    WanSpecError,
    format_duration,
    format_rate,
    parse_address,
    parse_duration,
    parse_rate,
)

MS = 1_000_000


@pytest.mark.parametrize(
    ("text", "ns"),
    [("20ms", 20 * MS), ("2ms", 2 * MS), ("0.5s", 500 * MS), ("250us", 250_000),
     ("250µs", 250_000), ("1.25ms", 1_250_000), ("0ms", 0), ("7ns", 7), (" 3 ms ", 3 * MS)],
)  # fmt: skip
def test_durations(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "bps"),
    [("100mbit", 10**8), ("1gbit", 10**9), ("10kbit", 10**4), ("2.5mbit", 2_500_000),
     ("1200bit", 1200), ("1Gbit", 10**9)],
)  # fmt: skip
def test_rates(text: str, bps: int) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize(
    "text", ["nan", "inf", "-5ms", "20", "1e3ms", "infms", "nanms", "ms", "20 parsecs", "", "5h"]
)
def test_bad_durations_are_one_line(text: str) -> None:
    with pytest.raises(WanSpecError) as exc:
        parse_duration(text, "rtt")
    assert "\n" not in str(exc.value) and "rtt" in str(exc.value)


@pytest.mark.parametrize("text", ["100", "100mbps", "100MB", "-1mbit", "nanmbit", "fast", "1e9bit"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(WanSpecError, match="rate"):
        parse_rate(text)


def test_bounds() -> None:
    with pytest.raises(WanSpecError, match="outside"):
        WanSpec(rtt_ns=61_000 * MS)
    with pytest.raises(WanSpecError, match="outside"):
        WanSpec(rtt_ns=0, jitter_ns=11_000 * MS)
    with pytest.raises(WanSpecError, match="outside"):
        WanSpec(rtt_ns=0, rate_bps=999)
    with pytest.raises(WanSpecError, match="outside"):
        WanSpec(rtt_ns=0, queue_bytes=100)


def test_contract_string_round_trip() -> None:
    spec = WanSpec.parse("rtt=20ms,jitter=2ms,rate=100mbit")
    assert (spec.rtt_ns, spec.jitter_ns, spec.rate_bps) == (20 * MS, 2 * MS, 10**8)
    assert spec.contract() == "rtt=20ms,jitter=2ms,rate=100mbit"
    assert WanSpec.parse(spec.contract()) == spec
    assert WanSpec.parse(" RTT = 0.5s ") == WanSpec(rtt_ns=500 * MS)
    assert WanSpec.parse("rtt=12.5ms").contract() == "rtt=12500us"
    assert spec.flags() == ["--rtt", "20ms", "--jitter", "2ms", "--rate", "100mbit"]


@pytest.mark.parametrize(
    ("text", "words"),
    [("", "expected"), ("jitter=2ms", "rtt is required"), ("rtt=20ms,rtt=5ms", "twice"),
     ("rtt=20ms,loss=1%", "unknown key"), ("rtt", "expected"), ("rtt=nan", "rtt"),
     ("rtt=20ms,rate=fast", "rate"), ("rtt=-1ms", "rtt"), ("rtt=20ms,", "expected")],
)  # fmt: skip
def test_bad_contract_strings(text: str, words: str) -> None:
    with pytest.raises(WanSpecError, match=words):
        WanSpec.parse(text)


def test_format_is_exact() -> None:
    for ns in (0, 1, 999, 1000, 1_500_000, 20 * MS, 3_000_000_000):
        assert parse_duration(format_duration(ns)) == ns
    for bps in (1000, 1500, 10**8, 2_500_000_000):
        assert parse_rate(format_rate(bps)) == bps


def test_addresses() -> None:
    assert parse_address("127.0.0.1:0", allow_port_zero=True) == ("127.0.0.1", 0)
    assert parse_address("[::1]:7777", allow_port_zero=False) == ("::1", 7777)
    for bad in ("127.0.0.1", "host:port", ":80", "h:70000", "::1:80"):
        with pytest.raises(WanSpecError):
            parse_address(bad, allow_port_zero=True)
    with pytest.raises(WanSpecError, match="outside 1..65535"):
        parse_address("127.0.0.1:0", allow_port_zero=False)


def test_link_serializes_at_the_rate() -> None:
    link = Link(8_000_000)  # 1 byte per µs
    assert link.transmit(0, 1000) == 1_000_000
    assert link.transmit(0, 1000) == 2_000_000  # queued behind the first
    assert link.transmit(5_000_000, 1) == 5_001_000  # an idle link starts at once
    assert Link(None).transmit(123, 10**9) == 123
    assert Link(10_000).piece_bytes() == MIN_PIECE_BYTES


@settings(max_examples=200, deadline=None)
@given(
    rtt=st.integers(0, 100 * MS),
    jitter=st.integers(0, 20 * MS),
    rate=st.none() | st.integers(1000, 10**10),
    reads=st.lists(st.tuples(st.integers(0, 5 * MS), st.integers(0, 70000)), max_size=40),
)
def test_lane_never_reorders_and_never_beats_the_floor(
    rtt: int, jitter: int, rate: int | None, reads: list[tuple[int, int]]
) -> None:
    path = Path(WanSpec(rtt_ns=rtt, jitter_ns=jitter, rate_bps=rate, seed=1))
    lane = path.lane(upstream=True)
    now, last, sent = 0, 0, 0
    for gap, n in reads:
        now += gap
        due = lane.due(now, n)
        sent += n
        assert due >= last  # non-decreasing: bytes are never reordered
        assert due >= now + path.one_way_up_ns  # the propagation delay is a floor
        assert due <= max(last, now, path.up.free_at_ns) + path.one_way_up_ns + jitter
        if rate is not None:  # everything read so far cannot have crossed faster than rate
            assert path.up.free_at_ns * rate >= sent * 8 * 1_000_000_000
        last = due


def test_jitter_spreads_within_bounds() -> None:
    path = Path(WanSpec(rtt_ns=20 * MS, jitter_ns=4 * MS, seed=7))
    lane = path.lane(upstream=False)
    delays = []
    for i in range(2000):
        now = i * 100 * MS  # far apart: no chunk waits for the one before
        delays.append(lane.due(now, 100) - now)
    assert min(delays) >= 10 * MS and max(delays) <= 14 * MS
    assert max(delays) - min(delays) > 3 * MS  # it does jitter
    assert abs(sum(delays) / len(delays) - 12 * MS) < 0.2 * MS  # uniform: mean half the jitter


def test_handshake_floor() -> None:
    lane = Path(WanSpec(rtt_ns=20 * MS)).lane(upstream=True)
    lane.not_before_ns = 50 * MS
    assert lane.due(1 * MS, 10) == 60 * MS  # bytes sent before the handshake ended wait for it


def test_relay_argv_and_listening_lines() -> None:
    spec = WanSpec.parse("rtt=20ms,rate=10mbit")
    argv = wan.relay_argv(
        spec, [("127.0.0.1:0", "127.0.0.1:7777"), (("::1", 0), ("::1", 50051))], python="py"
    )
    assert argv == [
        "py", "-m", "echoswarm.wan",
        "--listen", "127.0.0.1:0", "--to", "127.0.0.1:7777",
        "--listen", "[::1]:0", "--to", "[::1]:50051",
        "--rtt", "20ms", "--rate", "10mbit",
    ]  # fmt: skip
    with pytest.raises(WanSpecError):
        wan.relay_argv(spec, [("127.0.0.1:0", "127.0.0.1:0")])
    text = "LISTENING wan 127.0.0.1:4001\nLISTENING wan [::1]:4002\n"
    assert wan.read_listening(text, 2) == [("127.0.0.1", 4001), ("::1", 4002)]
    assert wan.read_listening(text[:-1], 2) is None  # the second line is not finished yet
    assert wan.read_listening("", 1) is None
    with pytest.raises(ValueError, match="LISTENING wan"):
        wan.read_listening("LISTENING tcp 127.0.0.1:1\n", 1)
