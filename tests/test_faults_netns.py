"""Faults on a multi-host run: a Locust master, two workers and the echo servers, each on a
namespace host of its own (tests/netns.py, tests/netns_cluster.py) binding its host's own
address, started with the command lines and Locust options ``python -m echoswarm run`` uses
(workers in its WorkerPool: a failed worker is replaced). A link is cut or a process killed
mid-run; each test records what happened in numbers (tests/fault_figures.py: ``pytest -s``
prints them, docs/faults.md tables them) and asserts what must hold: nothing hangs, every
process ends, failures carry their reasons, the load comes back, what was measured before the
fault is kept, and run.json says what happened.

The load is locustfiles/audio_stream.py (a 3200-byte frame every 100 ms per user, paced). Runs
are short (26-32 s) and the bounds wide: the machine has 2 cores shared with other work.
Needs root (skips with the reason otherwise; fails when ECHOSWARM_REQUIRE_SYSDEPS=1).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import fault_figures as ff
from tests import netns
from tests.netns_cluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(100)]
REPLY_TIMEOUT_S = 5.0  # the users' default --reply-timeout-s
BASE_S = 3  # the baseline: the seconds just before a fault, at full load
MASTER_TIMEOUT_S = 12  # the workers' --master-timeout-s in the master test


@pytest.fixture(scope="module", autouse=True)
def nothing_left_after_the_suite() -> Iterator[None]:
    """After the fault tests: no namespace of this session (``ip netns list``) and no veth in
    the machine's own namespace beyond those there before (``ip link``)."""
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
    """Hosts h0 (master), h1 and h2 (workers), h3 (servers); all removed after the test,
    whatever happened (processes stopped, anything left in a namespace killed)."""
    with netns.network(4, tmp_path) as net, Cluster(net, tmp_path / "run") as c:
        yield c


def _figures(request: pytest.FixtureRequest) -> ff.Figures:
    return ff.Figures(request.node.name)


def _pids(host: netns.Host) -> list[str]:
    return netns.ip("netns", "pids", host.name).split()


def _worker_index(run: dict[str, Any], hostname: str) -> list[int]:
    """Indexes of the workers that ran on ``hostname`` (a replacement adds one)."""
    return [w["index"] for w in run["workers"] if w.get("host") == hostname]


def _clock_offsets(run: dict[str, Any]) -> dict[str, list[float | None]]:
    """Each worker's measured clock offset to the master and its error bound (ms)."""
    return {
        f"{w.get('host')}#{w.get('index')}": [
            w.get("clock_offset_ms"),
            w.get("clock_offset_bound_ms"),
        ]
        for w in run["workers"]
    }


def _assert_clocks(run: dict[str, Any]) -> None:
    """Every host here shares one kernel clock: whatever the fault, each worker's measured
    offset is within its error bound (+1 ms) of zero, and no clock warning is raised."""
    assert not run.get("clock_warnings"), run.get("clock_warnings")
    for w in run["workers"]:
        offset, bound = w.get("clock_offset_ms"), w.get("clock_offset_bound_ms")
        assert offset is not None and bound is not None, w
        assert abs(offset) <= bound + 1.0, w


# -- a worker's link ----------------------------------------------------------------------------


def test_worker_link_down_10s_then_up(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """Worker h1's link goes down for 10 s mid-run, then up (20 users: 6 TCP + 4 WS per worker,
    100 messages/s each). Measures what h1's users record during the cut (failures by reason,
    seconds of its load lost), whether their connections survive, when the master declares h1
    missing (and moves its users: --enable-rebalancing) and when h1 rejoins, whether h1's
    samples from the cut reach the results (unrecorded seconds), when its load is back on time,
    what the rebalancing does to h2, and what run.json says."""
    c, fig = cluster, _figures(request)
    c.start_servers("tcp", "ws")
    c.start_master(users=20, run_time="28s", transports="tcp:3,ws:2")
    c.start_workers()
    spawned = c.wait_spawned()
    full = c.wait_full_load(200)
    fig["full_load_after_spawn_s"] = full - spawned
    victim, other = c.worker_hosts
    cut = c.mark("cut")
    victim.cut()
    c.hold(10)
    victim.restore()
    restore = c.mark("restore")
    rc = c.wait_master(45)
    c.wait_exits(c.workers, 15, "both workers exit after the master's quit")
    assert c.master is not None

    df = ff.events(c.results)
    run = c.run_json() or {}
    (mine_i,), (theirs_i,) = (_worker_index(run, h.hostname) for h in (victim, other))
    msgs = ff.messages(df)
    mine, theirs = msgs[msgs["worker"] == mine_i], msgs[msgs["worker"] == theirs_i]
    base = ff.rate(mine, cut - BASE_S, cut)
    base_other = ff.rate(theirs, cut - BASE_S, cut)
    end = float(run["start_epoch_s"]) + 28  # the planned end (-t 28s)
    missing = c.log_times(c.master, "failed to send heartbeat")
    healed = c.log_times(c.master, "self-healed")
    conns = ff.connects(df)
    entry = c.worker_entry(victim.hostname) or {}
    gaps = run.get("gaps") or []
    fig.update(
        {
            "cut_s": restore - cut,
            "h1_baseline_msgs_per_s": base,
            "h1_failures": ff.failures(mine),
            "h1_failed_seconds_of_load": ff.failed_seconds(mine, base),
            "h1_ok_later_than_timeout": ff.late_ok(mine, REPLY_TIMEOUT_S),
            "h1_unrecorded_s": ff.unrecorded_s(mine, cut - BASE_S, restore + 5),
            "h1_connects": int((conns["worker"] == mine_i).sum()),
            "h1_back_after_restore_s": ff.back_after(mine, restore, base, end - 1),
            "h1_max_latency_ms": float(mine["latency_ms"].max()),
            "h1_from_cut_minus_2s": ff.timeline(mine, cut - 2, restore + 8),
            "master_declared_missing_after_cut_s": missing[0] - cut if missing else None,
            "master_self_healed_after_restore_s": healed[0] - restore if healed else None,
            "h2_baseline_msgs_per_s": base_other,
            "h2_msgs_per_s_during_cut": ff.rate(theirs, cut + 5, restore),
            "h2_msgs_per_s_after": ff.rate(theirs, restore + 5, end - 1),
            "h2_failures": ff.failures(theirs),
            "total_msgs_per_s_after_rejoin": ff.rate(msgs, restore + 5, end - 1),
            "h1_run_json": {k: entry.get(k) for k in ("lost", "lost_reason", "final_report")},
            "gaps": [
                {k: g.get(k) for k in ("gap_s", "detection_s", "samples_lost_estimate")}
                for g in gaps
            ],  # fmt: skip
            "run_status": run.get("status"),
            "ended_by": run.get("ended_by"),
            "clock_offsets_ms": _clock_offsets(run),
            "master_rc": rc,
            "worker_rcs": [w.poll() for w in c.workers],
        }
    )
    fig.emit()

    # What was measured before the cut is all there, at the full rate.
    before = ff.per_second(mine, cut - BASE_S, cut)
    assert (before["ok"] >= 0.9 * base).all() and base >= 80, before
    # h1's users: messages due during the cut fail as timeouts (no reply within 5 s) or are
    # answered late once the link is back; no other reason.
    reasons = fig["h1_failures"]
    assert reasons and all("timeout" in r for r in reasons), reasons
    assert 2 <= fig["h1_failed_seconds_of_load"] <= 12
    # The connections survive a 10 s cut (TCP retransmits): no reconnect.
    assert fig["h1_connects"] == 10, conns
    # The master notices (3 missed heartbeats) and h1 rejoins by itself.
    assert missing and healed and 1 <= missing[0] - cut <= 8
    assert 0 <= fig["master_self_healed_after_restore_s"] <= 10
    # Everything h1 recorded during the cut reached the results (its reports were queued).
    assert fig["h1_unrecorded_s"] < 1.5
    # h1's load is back and on time.
    assert fig["h1_back_after_restore_s"] is not None and fig["h1_back_after_restore_s"] <= 20
    # h2 never fails.
    assert fig["h2_failures"] == {}
    # run.json: h1 rejoined (not lost, final report), the gap is recorded, the run is partial.
    assert entry.get("lost") is False and entry.get("final_report") is True, entry
    assert len(gaps) == 1 and gaps[0]["healed_utc"] is not None, gaps
    assert run["status"] == "partial"
    assert rc == 0 and fig["worker_rcs"] == [0, 0]
    _assert_clocks(run)
    ff.check_no_late_ok(df, REPLY_TIMEOUT_S)
    after = fig["total_msgs_per_s_after_rejoin"]
    if not 0.85 * 200 <= after <= 1.15 * 200:
        raise ff.LoadNotAsRequested(f"{after:g} messages/s after h1 rejoined; 200 asked for")
    ff.check_gaps(run)


# -- the servers' link --------------------------------------------------------------------------


def test_servers_link_cut_5s(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """The servers' host h3 is cut off for 5 s, twice, with 18 users (3 gRPC, 3 WS, 3 TCP per
    worker; 180 messages/s in all): first a plain cut (the servers keep their connections),
    then, 5 s later, a 5 s outage in which the servers are restarted (the host lost its
    connection state, as after a crash or a failover). Measures, per transport: failures by
    reason, seconds of load lost, reconnects (connect rows, their failures and delays) and when
    the load is back; and that nothing hangs (the run ends on time, every process exits)."""
    c, fig = cluster, _figures(request)
    c.start_servers("grpc", "ws", "tcp")
    c.start_master(users=18, run_time="32s", transports="grpc,ws,tcp")
    c.start_workers()
    spawned = c.wait_spawned()
    full = c.wait_full_load(180)
    fig["full_load_after_spawn_s"] = full - spawned
    host = c.server_host
    cut1 = c.mark("cut1")
    host.cut()
    c.hold(5)
    host.restore()
    up1 = c.mark("restore1")
    c.hold(5)  # on time again 2 s after the restore: 3 s of baseline before the next cut
    cut2 = c.mark("cut2")
    host.cut()
    c.crash_servers()
    c.hold(max(0.0, cut2 + 5 - time.time()))
    host.restore()
    up2 = c.mark("restore2")
    rc = c.wait_master(45)
    c.wait_exits(c.workers, 15, "both workers exit after the master's quit")
    assert c.master is not None
    master_exit = c.exit_time(c.master)
    assert master_exit is not None

    df = ff.events(c.results)
    run = c.run_json() or {}
    msgs = ff.messages(df)
    conns = ff.connects(df)
    for name, (cut, up) in {"plain": (cut1, up1), "state_lost": (cut2, up2)}.items():
        for rt in ("grpc", "ws", "tcp"):
            m = msgs[msgs["request_type"] == rt]
            base = ff.rate(m, cut - BASE_S, cut)
            window = ff.between(m, cut - 1, up + 5)
            reconnects = ff.between(conns[conns["request_type"] == rt], cut, up + 10)
            delays = ff.reconnect_delays(df[df["request_type"] == rt], cut, up + 10)
            fig[f"{name}_{rt}"] = {
                "baseline_per_s": base,
                "failures": ff.failures(window),
                "failed_s": ff.failed_seconds(window, base),
                "back_after_s": ff.back_after(m, up, base, up + (7 if name == "plain" else 9)),
                "connects": int(reconnects["ok"].sum()),
                "connect_failures": ff.failures(reconnects),
                "reconnect_delay_s": [min(delays), max(delays)] if delays else None,
            }
    fig["ok_later_than_timeout"] = ff.late_ok(msgs, REPLY_TIMEOUT_S)
    fig["all_from_cut1_minus_2s"] = ff.timeline(msgs, cut1 - 2, up2 + 6)
    fig["cut_s"] = [up1 - cut1, up2 - cut2]
    fig["run_status"] = run.get("status")
    fig["ended_by"] = run.get("ended_by")
    fig["clock_offsets_ms"] = _clock_offsets(run)
    fig["master_rc"] = rc
    fig["master_exit_after_spawn_s"] = master_exit - spawned
    fig.emit()

    for rt in ("grpc", "ws", "tcp"):
        plain, lost = fig[f"plain_{rt}"], fig[f"state_lost_{rt}"]
        assert plain["baseline_per_s"] >= 50, plain
        # A plain 5 s cut: only timeouts; the connections survive, no reconnect.
        assert all("timeout" in r for r in plain["failures"]), plain
        assert plain["failed_s"] <= 5 and plain["connects"] == 0, plain
        assert plain["back_after_s"] is not None, plain
        # State lost: every stream breaks with a reason and reconnects once the host is back,
        # after the users' backoff (0.1 s first), with no failed connect (the servers are up).
        assert lost["failures"] and lost["connects"] == 6, lost
        assert lost["reconnect_delay_s"][0] >= 0.09 and lost["reconnect_delay_s"][1] < 10, lost
        assert lost["back_after_s"] is not None, lost
    # Nothing hangs: the run ends on time (-t 32s after the spawn, plus the drain).
    assert fig["master_exit_after_spawn_s"] < 32 + 15
    assert rc == 0 and [w.poll() for w in c.workers] == [0, 0]
    assert run["status"] == "complete"  # no worker was lost: the failures are in the data
    _assert_clocks(run)
    ff.check_no_late_ok(df, REPLY_TIMEOUT_S)


# -- the master's link --------------------------------------------------------------------------


def test_master_link_cut(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """The master's host h0 is cut off twice (18 users: gRPC, WS and TCP on both workers, whose
    --master-timeout-s is 12): first for 6 s — longer than it takes Locust to declare both
    workers missing (3 missed heartbeats: 3-5 s), shorter than the workers' master timeout even
    with TCP's retransmission backoff (heartbeats resume ~7.4 s after the cut) — then for good.
    Measures when the master declares the workers missing and what it does then, whether the
    workers rejoin after the first cut and whether the load resumes, how long the workers take
    to quit after the second (the 12 s master timeout), that no process is left on any worker
    host (the gRPC driver processes included: no orphans), the seconds of load lost, and what
    run.json says."""
    c, fig = cluster, _figures(request)
    c.start_servers("grpc", "ws", "tcp")
    c.start_master(users=18, run_time="30s", transports="grpc,ws,tcp")
    c.start_workers(extra=["--master-timeout-s", str(MASTER_TIMEOUT_S)])
    spawned = c.wait_spawned()
    full = c.wait_full_load(180)
    fig["full_load_after_spawn_s"] = full - spawned
    host = c.master_host
    cut1 = c.mark("cut1")
    host.cut()
    c.hold(6)
    host.restore()
    up1 = c.mark("restore1")
    assert c.master is not None
    master = c.master
    c.wait_until(lambda: len(c.log_times(master, "self-healed")) >= 2, 15, "both workers rejoin")
    c.hold(2)
    cut2 = c.mark("cut2")
    host.cut()
    workers = c.workers
    c.wait_exits(workers, MASTER_TIMEOUT_S + 15, "the workers quit without their master")
    quits = [c.exit_time(w) for w in workers]
    left = {h.hostname: _pids(h) for h in c.worker_hosts}
    host.restore()
    rc = c.wait_master(45)
    master_exit = c.exit_time(master)
    assert master_exit is not None and all(q is not None for q in quits)

    df = ff.events(c.results)
    run = c.run_json() or {}
    msgs = ff.messages(df)
    base = ff.rate(msgs, cut1 - BASE_S, cut1)
    missing = c.log_times(master, "failed to send heartbeat")
    healed = c.log_times(master, "self-healed")
    stopped = c.log_times(master, "The last worker went missing, stopping test")
    last_ok = float(msgs[msgs["ok"]]["t"].max())
    fig.update(
        {
            "cut_s": [up1 - cut1, None],
            "baseline_msgs_per_s": base,
            "missing_after_cut1_s": [t - cut1 for t in missing[:2]],
            "master_stopped_test_after_cut1_s": stopped[0] - cut1 if stopped else None,
            "self_healed_after_restore1_s": [t - up1 for t in healed[:2]],
            "msgs_per_s_after_rejoin": ff.rate(msgs, max(healed[:2]) + 1, cut2),
            "last_message_due_after_cut1_s": last_ok - cut1,
            "failures": ff.failures(df),
            "all_from_cut1_minus_2s": ff.timeline(msgs, cut1 - 2, cut2),
            "load_lost_s": float(run["start_epoch_s"]) + 30 - last_ok,
            "workers_quit_after_cut2_s": [q - cut2 for q in quits if q is not None],
            "worker_rcs": [w.poll() for w in workers],
            "processes_left_on_worker_hosts": left,
            "replacements": sum(len(p.replacements) for p in c.pools),
            "run_status": run.get("status"),
            "ended_by": run.get("ended_by"),
            "clock_offsets_ms": _clock_offsets(run),
            "lost_workers": len(run.get("lost_workers") or []),
            "master_rc": rc,
            "master_exit_after_spawn_s": master_exit - spawned,
        }
    )
    fig.emit()

    # First cut: both workers are declared missing after ~3 missed heartbeats, the master stops
    # the test (Locust: "the last worker went missing"), the workers rejoin once the link is
    # back, but the load does not resume (Locust does not restart a stopped test).
    assert len(missing) >= 2 and all(1 <= t - cut1 <= 8 for t in missing[:2]), missing
    assert stopped and len(healed) >= 2 and all(0 <= t - up1 <= 10 for t in healed[:2])
    assert base >= 150 and fig["msgs_per_s_after_rejoin"] == 0
    # What was measured before the cut is kept, and no message failed (the users were stopped).
    assert ff.per_second(msgs, cut1 - BASE_S, cut1)["ok"].min() >= 0.9 * base
    assert fig["failures"] == {}
    # Second cut: every worker quits once its master timeout has passed since the last
    # heartbeat it got (up to 1 s before the cut; checked once a second), exits 0 (so it is not
    # replaced), and leaves nothing behind on its host.
    quit_bounds = MASTER_TIMEOUT_S - 2, MASTER_TIMEOUT_S + 6
    assert all(quit_bounds[0] <= q <= quit_bounds[1] for q in fig["workers_quit_after_cut2_s"])
    assert fig["worker_rcs"] == [0, 0] and fig["replacements"] == 0
    assert left == {h.hostname: [] for h in c.worker_hosts}
    # The master ends at its run time and says the run is partial with both workers lost.
    assert rc == 0 and fig["master_exit_after_spawn_s"] < 30 + 15
    assert run["status"] == "partial"
    _assert_clocks(run)
    ff.check_gaps(run)
    if fig["lost_workers"] != 2:
        raise ff.RunJsonMisreports(f"{fig['lost_workers']} workers marked lost; both quit")


# -- a worker SIGKILLed -------------------------------------------------------------------------


def test_worker_sigkilled_is_replaced(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """Worker h1 is SIGKILLed mid-run (18 users: gRPC, WS and TCP on both workers). The worker
    pool starts a replacement on h1 and the master rebalances (--enable-rebalancing). Measures:
    when the master declares h1 missing, when the replacement connects and carries load, where
    the users run meanwhile (h2), the seconds of h1's data lost (its samples after its last
    report), the dip in the total load and when it is back, that the killed worker's gRPC driver
    process died with it (no orphan on h1), and run.json's gap record."""
    c, fig = cluster, _figures(request)
    c.start_servers("grpc", "ws", "tcp")
    c.start_master(users=18, run_time="26s", transports="grpc,ws,tcp")
    c.start_workers()
    spawned = c.wait_spawned()
    full = c.wait_full_load(180)
    fig["full_load_after_spawn_s"] = full - spawned
    victim_host, other_host = c.worker_hosts
    victim = c.worker_on(victim_host)
    before_kill = set(_pids(victim_host))
    killed = c.mark("kill")
    os.kill(victim.pid, signal.SIGKILL)
    pool = c.pools[0]
    c.wait_until(lambda: pool.replacements, 10, "a replacement worker is started")
    replacement = c.worker_on(victim_host)
    assert c.master is not None
    master = c.master
    c.wait_until(
        lambda: len(c.log_lines(master, "reported as ready")) >= 3, 20, "the replacement connects"
    )
    orphans = c.wait_until(
        lambda: (before_kill & set(_pids(victim_host))) or [None], 10, "h1's old processes end"
    )
    rc = c.wait_master(45)
    c.wait_exits(c.workers, 15, "the workers exit after the master's quit")
    master_exit = c.exit_time(master)
    assert master_exit is not None

    df = ff.events(c.results)
    run = c.run_json() or {}
    old_i, new_i = _worker_index(run, victim_host.hostname)
    (other_i,) = _worker_index(run, other_host.hostname)
    msgs = ff.messages(df)
    old, new, other = (msgs[msgs["worker"] == i] for i in (old_i, new_i, other_i))
    last_old = float(old["t"].max())  # h1 ran on after it, unrecorded, until the kill
    base = ff.rate(msgs, last_old - BASE_S, last_old)
    end = float(run["start_epoch_s"]) + 26  # the planned end (-t 26s)
    missing = c.log_times(master, "failed to send heartbeat")
    new_first = float(new["t"].min()) if len(new) else None
    gaps = run.get("gaps") or []
    fig.update(
        {
            "baseline_msgs_per_s": base,
            "h1_unrecorded_s": killed - last_old,
            "missing_after_kill_s": missing[0] - killed if missing else None,
            "replacement_started_after_kill_s": pool.replacements[0]["replacement_started_utc"]
            - killed,
            "replacement_first_message_after_kill_s": new_first - killed if new_first else None,
            "total_msgs_per_s_kill_to_replacement": ff.rate(msgs, killed, new_first or end),
            "h2_msgs_per_s_before": ff.rate(other, last_old - BASE_S, last_old),
            "h2_msgs_per_s_after": ff.rate(other, end - 5, end),
            "new_h1_msgs_per_s_after": ff.rate(new, end - 5, end),
            "total_back_after_kill_s": ff.back_after(msgs, killed, base, end),
            "load_lost_s": ff.deficit_seconds(msgs, last_old, end, base),
            "all_from_kill_minus_2s": ff.timeline(msgs, killed - 2, killed + 10),
            "failures": ff.failures(df),
            "orphans_on_h1": sorted(p for p in orphans if p),
            "gaps": [
                {
                    k: g.get(k)
                    for k in ("gap_s", "detection_s", "samples_lost_estimate", "expected_per_s")
                }
                for g in gaps
            ],  # fmt: skip
            "pool_lost_exit_code": pool.lost[0]["exit_code"] if pool.lost else None,
            "run_status": run.get("status"),
            "ended_by": run.get("ended_by"),
            "clock_offsets_ms": _clock_offsets(run),
            "master_rc": rc,
            "master_exit_after_spawn_s": master_exit - spawned,
            "worker_rcs": [w.poll() for w in c.workers],
        }
    )
    fig.emit()

    # What h1 measured up to its last report is kept; what it measured after is lost with it
    # (at most one report interval, 3 s, plus the load's jitter).
    assert 0 <= fig["h1_unrecorded_s"] <= 4.5, fig
    assert base >= 150
    # The pool replaced it on the same host at once; the killed worker's gRPC driver died with
    # it (PR_SET_PDEATHSIG): nothing of the old worker is left on h1.
    assert fig["pool_lost_exit_code"] == -signal.SIGKILL
    assert fig["replacement_started_after_kill_s"] < 2 and replacement.pid != victim.pid
    assert fig["orphans_on_h1"] == []
    # The master noticed (3 missed heartbeats).
    assert missing and 1 <= fig["missing_after_kill_s"] <= 8
    # The replacement connects at once (the master rebalances onto it), and carries its share to
    # the end: the load is back within seconds, at the rate asked for.
    assert fig["replacement_first_message_after_kill_s"] is not None
    assert fig["replacement_first_message_after_kill_s"] <= 10
    assert fig["total_back_after_kill_s"] is not None and fig["total_back_after_kill_s"] <= 12
    after = fig["new_h1_msgs_per_s_after"], fig["h2_msgs_per_s_after"]
    assert all(0.35 * base <= r <= 0.65 * base for r in after), after
    assert 0.85 * base <= sum(after) <= 1.15 * base, after
    assert fig["load_lost_s"] <= 12, fig
    # run.json: one gap, replaced by the new worker; the run is partial (orchestrator: exit 4).
    assert len(gaps) == 1 and gaps[0]["replacement"] is not None, gaps
    assert 0 < gaps[0]["gap_s"] < 12 and gaps[0]["samples_lost_estimate"] is not None, gaps
    assert run["status"] == "partial"
    assert rc == 0 and all(rc_w in (0, -signal.SIGKILL) for rc_w in fig["worker_rcs"])
    _assert_clocks(run)
