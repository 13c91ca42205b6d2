"""Faults on a multi-host run: a Locust master, two workers and the echo servers, each on a
namespace host of its own (tests/netns.py, tests/netns_cluster.py), each binding its host's own
address; a link is cut or a process killed mid-run, and each test records what happened in
numbers (tests/fault_figures.py; ``pytest -s`` prints them, docs/faults.md tables them) and
asserts what must hold: nothing hangs, every process ends, failures carry their reasons, the
load comes back, what was measured before the fault is kept, and the run's files say what
happened.

The load is locustfiles/audio_stream.py (a 3200-byte frame every 100 ms per user, paced). Runs
are short (about 30 s) and the bounds are wide: the machine has 2 cores shared with other work.
Needs root (skips with the reason otherwise; fails when ECHOSWARM_REQUIRE_SYSDEPS=1).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import fault_figures as ff
from tests import netns
from tests.netns_cluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(110)]
REPLY_TIMEOUT_S = 5.0  # the users' default --reply-timeout-s
LATE_OK = pytest.mark.xfail(
    strict=True,
    raises=ff.LateRepliesCountedOk,
    reason="echoswarm.measure.InFlight.received settles a reply that came after the reply "
    "timeout as ok (paced streams expire overdue messages only when they send the next one, "
    "and a stalled link blocks the send); the test's other checks still fail it",
)


@pytest.fixture(scope="module", autouse=True)
def nothing_left_after_the_suite() -> Iterator[None]:
    """After every fault test: no namespace of this session, no veth in the machine's own
    namespace beyond those there before (``ip netns list`` / ``ip link``)."""
    netns.require()
    veths_before = _root_veths()
    yield
    mine = f"{netns.PREFIX}-{os.getpid()}-"
    assert [n for n in netns.namespaces() if n.startswith(mine)] == []
    assert _root_veths() <= veths_before


def _root_veths() -> set[str]:
    out = netns.ip("-o", "link", "show", "type", "veth")
    return {line.split(":")[1].strip() for line in out.splitlines() if line.strip()}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Hosts h0 (master), h1 and h2 (workers), h3 (servers); removed after the test, whatever
    happened (its processes are stopped, anything left in a namespace is killed)."""
    with netns.network(4, tmp_path) as net:
        yield Cluster(net, tmp_path / "run")


def _figures(request: pytest.FixtureRequest) -> ff.Figures:
    return ff.Figures(request.node.name)


# -- a worker's link ----------------------------------------------------------------------------


@LATE_OK
def test_worker_link_down_10s_then_up(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """Worker h1's link goes down for 10 s mid-run, then up (20 users, 6 TCP + 4 WS per worker,
    100 messages/s each). Measures what h1's users record during the cut (failures by reason,
    seconds of load lost), whether their connections survive or reconnect, whether and when h1
    is declared missing and rejoins, whether its samples from the cut reach the results
    (unrecorded seconds), when its load is back on time, and that h2 does not notice."""
    c, fig = cluster, _figures(request)
    c.start_servers("tcp", "ws")
    c.start_master(users=20, run_time="28s", transports="tcp:3,ws:2")
    c.start_workers()
    c.wait_running()
    victim, other = c.worker_hosts
    c.hold(4)
    cut = c.mark("cut")
    victim.cut()
    c.hold(10)
    victim.restore()
    restore = c.mark("restore")

    def reported_again() -> float | None:
        entry = c.worker_entry(victim.hostname)
        last = entry.get("last_report_utc") if entry else None
        return last if last is not None and last > restore else None

    first_report = c.wait_until(reported_again, 20, "h1 reports to the master again")
    rc = c.wait_master(45)
    c.wait_exits(c.workers, 15, "both workers exit after the master's quit")
    assert c.master is not None

    df = ff.events(c.results)
    run = c.run_json() or {}
    index = {w["host"]: w["index"] for w in run["workers"]}
    end = float(run["end_epoch_s"]) if "end_epoch_s" in run else c.exits[c.master.pid][0]
    msgs = ff.messages(df)
    mine, theirs = (msgs[msgs["worker"] == index[h.hostname]] for h in (victim, other))
    base = ff.rate(mine, cut - 4, cut)
    base_other = ff.rate(theirs, cut - 4, cut)
    during = ff.per_second(theirs, cut, restore + 5)
    missing = c.log_times(c.master, "failed to send heartbeat")
    healed = c.log_times(c.master, "self-healed")
    conns = ff.connects(df)
    entry = c.worker_entry(victim.hostname) or {}
    fig.update(
        {
            "cut_s": restore - cut,
            "h1_baseline_msgs_per_s": base,
            "h1_failures": ff.failures(mine),
            "h1_failed_seconds_of_load": ff.failed_seconds(mine, base),
            "h1_unrecorded_s": ff.unrecorded_s(mine, cut - 4, restore + 5),
            "h1_connects": int((conns["worker"] == index[victim.hostname]).sum()),
            "h1_back_after_restore_s": ff.back_after(mine, restore, base, end - 1),
            "h1_max_latency_ms": float(mine["latency_ms"].max()),
            "master_declared_missing_after_cut_s": missing[0] - cut if missing else None,
            "master_self_healed_after_restore_s": healed[0] - restore if healed else None,
            "h1_report_after_restore_s": first_report - restore,
            "h2_failures": ff.failures(theirs),
            "h2_min_rate_during_cut_vs_baseline": float(during["ok"].min()) / base_other,
            "run_status": run.get("status"),
            "h1_ok_later_than_timeout": ff.late_ok(mine, REPLY_TIMEOUT_S),
            "h1_run_json": {k: entry.get(k) for k in ("lost", "lost_reason", "final_report")},
            "master_rc": rc,
            "worker_rcs": [w.popen.returncode for w in c.workers],
        }
    )
    fig.emit()

    # What was measured before the cut is all there, at the full rate.
    before = ff.per_second(mine, cut - 4, cut)
    assert (before["ok"] >= 0.9 * base).all() and base >= 80, before
    # h1's users: messages due in the first ~5 s of the cut time out (no reply within the 5 s
    # reply timeout); those due later are answered late once the link is back. No other reason.
    reasons = fig["h1_failures"]
    assert reasons and all("timeout" in r for r in reasons), reasons
    assert 2 <= fig["h1_failed_seconds_of_load"] <= 12
    # The connections survive a 10 s cut (TCP retransmits): no reconnect.
    assert fig["h1_connects"] == 10, conns
    # The master notices (missing after ~3 missed heartbeats) and h1 rejoins by itself.
    assert missing and healed and 1 <= missing[0] - cut <= 8
    assert 0 <= fig["master_self_healed_after_restore_s"] <= 10
    # Everything h1 recorded during the cut reached the results (its reports were queued).
    assert fig["h1_unrecorded_s"] < 1.5
    # Its load is back and on time.
    assert fig["h1_back_after_restore_s"] is not None and fig["h1_back_after_restore_s"] <= 20
    # h2 does not notice.
    assert fig["h2_failures"] == {} and fig["h2_min_rate_during_cut_vs_baseline"] >= 0.9
    # Failures were counted: Locust exits 1 (--exit-code-on-error); the workers exit cleanly.
    assert rc == 1 and fig["worker_rcs"] == [0, 0]
    ff.check_no_late_ok(df, REPLY_TIMEOUT_S)


# -- the servers' link --------------------------------------------------------------------------


@LATE_OK
def test_servers_link_cut_5s(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """The servers' host h3 is cut off for 5 s, twice, with 18 users (3 gRPC, 3 WS, 3 TCP per
    worker, 180 messages/s in all): first a plain cut (the servers keep their connections),
    then a 5 s outage in which the servers are restarted (the host lost its connection state,
    as after a crash or a failover). Measures, per transport: failures by reason, seconds of
    load lost, reconnects (connect rows, their failures and delays) and when the load is back;
    and that nothing hangs (the run ends on time, every process exits)."""
    c, fig = cluster, _figures(request)
    c.start_servers("grpc", "ws", "tcp")
    c.start_master(users=18, run_time="32s", transports="grpc,ws,tcp")
    c.start_workers()
    c.wait_running()
    host = c.server_host
    c.hold(4)
    cut1 = c.mark("cut1")
    host.cut()
    c.hold(5)
    host.restore()
    up1 = c.mark("restore1")
    c.hold(7)
    cut2 = c.mark("cut2")
    host.cut()
    c.crash_servers()
    c.hold(max(0.0, cut2 + 5 - time.time()))
    host.restore()
    up2 = c.mark("restore2")
    rc = c.wait_master(45)
    c.wait_exits(c.workers, 15, "both workers exit after the master's quit")
    assert c.master is not None
    master_end = c.exits[c.master.pid][0]

    df = ff.events(c.results)
    run = c.run_json() or {}
    msgs = ff.messages(df)
    conns = ff.connects(df)
    for name, (cut, up) in {"plain": (cut1, up1), "state_lost": (cut2, up2)}.items():
        for rt in ("grpc", "ws", "tcp"):
            m = msgs[msgs["request_type"] == rt]
            base = ff.rate(m, cut - 4, cut)
            window = ff.between(m, cut - 1, up + 5)
            reconnects = ff.between(conns[conns["request_type"] == rt], cut, up + 10)
            fig[f"{name}_{rt}"] = {
                "baseline_per_s": base,
                "failures": ff.failures(window),
                "failed_s": ff.failed_seconds(window, base),
                "back_after_s": ff.back_after(m, up, base, up + (7 if name == "plain" else 9)),
                "connects": int(reconnects["ok"].sum()),
                "connect_failures": ff.failures(reconnects),
            }
    fig["ok_later_than_timeout"] = ff.late_ok(msgs, REPLY_TIMEOUT_S)
    fig["cut_s"] = [up1 - cut1, up2 - cut2]
    fig["run_status"] = run.get("status")
    fig["master_rc"] = rc
    fig["master_exit_after_end_s"] = master_end - (c.marks["master_started"] + 32)
    fig.emit()

    for rt in ("grpc", "ws", "tcp"):
        plain, lost = fig[f"plain_{rt}"], fig[f"state_lost_{rt}"]
        assert plain["baseline_per_s"] >= 50, plain
        # A plain 5 s cut: only timeouts, about the first 1-2 s of the cut; no reconnect.
        assert all("timeout" in r for r in plain["failures"]), plain
        assert plain["failed_s"] <= 4 and plain["connects"] == 0, plain
        assert plain["back_after_s"] is not None, plain
        # State lost: every stream breaks with a reason, and reconnects once the host is back.
        assert lost["failures"] and lost["connects"] >= 6, lost
        assert lost["back_after_s"] is not None, lost
    assert rc == 1 and [w.popen.returncode for w in c.workers] == [0, 0]
    ff.check_no_late_ok(df, REPLY_TIMEOUT_S)
