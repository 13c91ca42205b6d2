"""The S001 sweep's table, verdicts and plot (serial vs parallel images × reply mode), from a
finished sweep: total time for the N images (first connect → last reply), images per second,
per-image latency percentiles (serial: send → reply on the open connection; parallel: connect →
closed, the whole life of an image's connection) and send → reply alone; the notes say which
kind wins on which measure. The cells are run by :mod:`echoswarm.sweep.images`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.sweeps import common as st
from analysis.sweeps.common import CellRun
from echoswarm.streams.images import per_user

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


def table(cells: list[CellRun], plan: dict[str, Any]) -> pd.DataFrame:
    images, parallel = int(plan["images"]), int(plan["parallel"])
    records = []
    for o in cells:
        kind = str(o.key["kind"])
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
                "reply": o.key["reply"],
                "kind": kind,
                "rep": int(o.key.get("rep", 1)),
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


def render(df: pd.DataFrame, sweep_dir: Path, plan: dict[str, Any]) -> list[Path]:
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
