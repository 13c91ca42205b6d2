"""Seed S001 as a sweep: serial vs parallel images × the server's reply after/before the work.

Four cells, each a separate local run so the two kinds never compete for the CPU: for each
``--reply`` mode of the declared ``ws --work stats`` server, one ``serial`` cell (one user, one
connection, ``--images`` images back to back) and one ``parallel`` cell (``--parallel`` users,
a fresh connection per image, ``--images`` in total). The table gives the total time for the N
images (first connect → last reply), images per second, per-image latency percentiles (serial:
send → reply on the open connection; parallel: connect → closed, the whole life of an image's
connection) and send → reply alone; the notes say which kind wins on which measure.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from echoswarm import sweep_table as st
from echoswarm.argtypes import positive_int
from echoswarm.images import per_user
from echoswarm.scenario import ServerSpec
from echoswarm.sweep import (
    Cell,
    Outcome,
    Plan,
    SweepParser,
    UsageError,
    add_common_flags,
    choice_list,
)

FULL = {"images": 1000, "parallel": 50, "cell_time": 120.0}
QUICK = {"images": 200, "parallel": 20, "cell_time": 40.0}
DEFAULT_WORKERS = 1  # the same client capacity for both kinds
REPLIES = ("after", "before")
KINDS = ("serial", "parallel")

HEADERS = {
    "reply": "reply",
    "kind": "kind",
    "status": "status",
    "images": "images ok",
    "errors": "errors",
    "total_s": "total s",
    "images_per_s": "images/s",
    "image_p50_ms": "per-image p50",
    "image_p90_ms": "per-image p90",
    "image_p99_ms": "per-image p99",
    "reply_p50_ms": "send→reply p50",
    "reply_p99_ms": "send→reply p99",
    "connect_p50_ms": "connect p50",
}


def _stats_server(servers: list[ServerSpec]) -> ServerSpec:
    ws = [s for s in servers if s.kind == "ws" and "stats" in s.args]
    if len(ws) != 1:
        raise UsageError("an image sweep needs exactly one declared ws server with --work stats")
    return ws[0]


def make_plan(argv: list[str], servers: list[ServerSpec]) -> Plan:
    p = SweepParser(prog="python -m echoswarm sweep", description=__doc__.splitlines()[0])
    add_common_flags(p)
    p.add_argument("--images", type=positive_int, default=None, help="images per cell (1000)")
    p.add_argument("--parallel", type=positive_int, default=None, help="parallel users (50)")
    p.add_argument("--replies", default="all", help="all or a list of: after, before")
    p.add_argument("--kinds", default="all", help="all or a list of: serial, parallel")
    p.add_argument(
        "--repeat", type=positive_int, default=1, help="run the whole grid N times (noise)"
    )
    ns = p.parse_args(argv)
    base = QUICK if ns.quick else FULL
    images = ns.images or int(base["images"])
    parallel = ns.parallel or int(base["parallel"])
    limit = ns.cell_time or float(base["cell_time"])
    replies = choice_list(ns.replies, REPLIES, "reply mode")
    kinds = choice_list(ns.kinds, KINDS, "kind")
    server = _stats_server(servers)
    common = ["--images", str(images), "--parallel", str(parallel), "--reply-timeout-s", "30"]
    cells = []
    for rep in range(1, ns.repeat + 1):  # whole grid again: drifts spread over every cell
        for reply in replies:
            for kind in kinds:
                users = 1 if kind == "serial" else parallel
                prefix = kind + " "
                done = (
                    st.all_messages(images, prefix)
                    if kind == "serial"
                    else st.all_connections(parallel * per_user(images, parallel), prefix)
                )
                tag = {"rep": rep} if ns.repeat > 1 else {}
                cells.append(
                    Cell(
                        label=f"{kind}-{reply}" + (f"-r{rep}" if tag else ""),
                        key={"reply": reply, "kind": kind, **tag},
                        users=users,
                        spawn_rate=ns.spawn_rate or float(users),
                        time_limit_s=limit,
                        locust_args=["--image-kind", kind, *common],
                        server_overrides={server.label: ["--reply", reply]},
                        done=done,
                    )
                )
    return Plan(
        title=f"S001 images: {images} × 800×600 per cell, serial vs {parallel} parallel, "
        f"reply {'/'.join(replies)}" + (f", {ns.repeat} repeats" if ns.repeat > 1 else ""),
        locustfile=ns.locustfile,
        workers=ns.workers or DEFAULT_WORKERS,
        cells=cells,
        table=lambda outcomes: table(outcomes, images, parallel),
        render=render,
        out=ns.out,
        describe={
            "grid": "images",
            "images": images,
            "parallel": parallel,
            "replies": replies,
            "kinds": kinds,
            "cell_time_s": limit,
            "repeat": ns.repeat,
            "quick": ns.quick,
        },
    )


def table(outcomes: list[Outcome], images: int, parallel: int) -> pd.DataFrame:
    records = []
    for o in outcomes:
        kind = str(o.cell.key["kind"])
        prefix = kind + " "
        rows = st.summary_rows(o.results)
        c_name, connect = st.phase(rows, "connect", prefix)
        reply_name = "msg" if kind == "serial" else "roundtrip"
        r_name, reply = st.phase(rows, reply_name, prefix)
        # Per image: on the open connection (serial) / the image's whole connection (parallel).
        image = reply if kind == "serial" else st.phase(rows, "session", prefix)[1]
        expected = images if kind == "serial" else parallel * per_user(images, parallel)
        ok = st.count(reply) - st.count(reply, "failures")
        total = st.span_s(st.events(o.results), c_name, r_name)
        records.append(
            {
                "reply": o.cell.key["reply"],
                "kind": kind,
                "rep": int(o.cell.key.get("rep", 1)),
                "status": o.status,
                "images": f"{ok}/{expected}",
                "errors": sum(int(r.get("failures") or 0) for r in rows.values()),
                "total_s": total,
                "images_per_s": ok / total if total and not math.isnan(total) else math.nan,
                "image_p50_ms": st.fig(image, "p50_ms"),
                "image_p90_ms": st.fig(image, "p90_ms"),
                "image_p99_ms": st.fig(image, "p99_ms"),
                "reply_p50_ms": st.fig(reply, "p50_ms"),
                "reply_p99_ms": st.fig(reply, "p99_ms"),
                "connect_p50_ms": st.fig(connect, "p50_ms"),
                "ok_images": ok,
                "cell_s": round(o.wall_s, 1),
                "results": str(o.results),
            }
        )
    return pd.DataFrame.from_records(records)


def verdicts(df: pd.DataFrame) -> list[str]:
    """Which kind wins on throughput and on latency, per reply mode (over every run done)."""
    out = []
    for reply, group in df.groupby("reply", sort=False):
        done = group[group["status"] == "done"]
        runs = done.pivot_table(
            index="rep", columns="kind", values=["total_s", "image_p50_ms", "image_p99_ms"]
        ).dropna()
        if runs.empty or not {"serial", "parallel"} <= set(runs["total_s"].columns):
            out.append(f"- reply {reply}: no verdict (no run with both kinds done: see status).")
            continue
        t, p50, p99 = runs["total_s"], runs["image_p50_ms"], runs["image_p99_ms"]
        n = len(runs)
        fast = _winner(int((t["parallel"] < t["serial"]).sum()), n, "parallel", "serial")
        low = _winner(int((p50["serial"] < p50["parallel"]).sum()), n, "serial", "parallel")
        med = "median " if n > 1 else ""
        count = int(done[done["kind"] == "serial"]["ok_images"].median())
        out.append(
            f"- reply {reply}: throughput — {fast} ({med}{st.fmt(t['parallel'].median())} s "
            f"parallel vs {st.fmt(t['serial'].median())} s serial for {count} images); "
            f"latency — {low} ({med}per-image p50 {st.fmt(p50['serial'].median())} ms serial vs "
            f"{st.fmt(p50['parallel'].median())} ms parallel, p99 "
            f"{st.fmt(p99['serial'].median())} vs {st.fmt(p99['parallel'].median())} ms)."
        )
    return out


def _winner(wins: int, n: int, kind: str, other: str) -> str:
    """ "kind wins" / "other wins" (with "in k of n runs" when repeated) / "no winner"."""
    runs = f" in {max(wins, n - wins)} of {n} runs" if n > 1 else ""
    if wins * 2 > n:
        return f"{kind} wins{runs}"
    if wins * 2 < n:
        return f"{other} wins{runs}"
    return f"no winner ({kind} ahead in {wins} of {n} runs)"


def render(df: pd.DataFrame, sweep_dir: Path) -> list[Path]:
    notes = [
        "Times in ms unless marked s. total s = first connect → last reply. per-image: serial =",
        "send → reply on the open connection; parallel = connect → closed (the image's whole",
        "connection). Percentiles from merged HDR histograms. Every reply was checked: numpy's",
        "figures for the image sent (after) or the acknowledgement with size and seq (before).",
        "",
        *verdicts(df),
    ]
    headers = {"rep": "run", **HEADERS} if df["rep"].nunique() > 1 else HEADERS
    files = st.write_outputs(df, sweep_dir, headers, notes)
    files.append(plot(df, sweep_dir / "sweep.png"))
    return files


def plot(df: pd.DataFrame, path: Path) -> Path:
    """Left: total time for the images; right: per-image p50 with p99 ticks (log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.plots import log_ticks, suptitle

    # Medians over repeats, in the order the cells ran.
    agg = {"total_s": "median", "image_p50_ms": "median", "image_p99_ms": "median"}
    df = df.groupby(["reply", "kind"], as_index=False, sort=False).agg(agg)
    labels = [f"{k}\n{r}" for k, r in zip(df["kind"], df["reply"], strict=True)]
    colors = ["#37a" if k == "serial" else "#d83" for k in df["kind"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    a.bar(labels, df["total_s"].fillna(0), color=colors)
    a.set_ylabel("total time for the images, s")
    a.set_title("throughput (lower is better)")
    b.bar(labels, df["image_p50_ms"].fillna(0), color=colors, label="p50")
    b.plot(labels, df["image_p99_ms"], "k_", markersize=20, label="p99")
    b.set_yscale("log")
    b.set_ylabel("per-image latency, ms (log)")
    b.set_title("latency (lower is better)")
    b.legend(fontsize=8)
    a.grid(axis="y", alpha=0.3)
    b.grid(axis="y", which="major", alpha=0.3)
    suptitle(fig, "S001: serial vs parallel WebSocket images (medians over runs)")
    log_ticks(b, "y")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
