"""The S003 sweep's table and plot (TCP server models × concurrency), from a finished sweep.

Columns (per model × users): connect p50/p99; one round trip p50/p99; send/recv per connection
(the sum of its round trips, the seed's "send/receive time") p50/p99; total per connection
(connect → close, the seed's total) p50/p99; wall time from the first connect to the last
close; round trips per second; errors; rank by total p50 within the concurrency level. The
cells are run by :mod:`echoswarm.sweep.tcp`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.sweeps import common as st
from analysis.sweeps.common import CellRun

HEADERS = {
    "users": "users",
    "model": "model",
    "status": "status",
    "connections": "conns done",
    "errors": "errors",
    "connect_p50_ms": "connect p50",
    "connect_p99_ms": "connect p99",
    "rt_p50_ms": "round trip p50",
    "rt_p99_ms": "round trip p99",
    "conn_rt_p50_ms": "send/recv per conn p50",
    "conn_rt_p99_ms": "send/recv per conn p99",
    "total_p50_ms": "total per conn p50",
    "total_p99_ms": "total per conn p99",
    "wall_s": "wall s",
    "rt_per_s": "round trips/s",
    "rank": "rank",
}


def _per_connection_ms(ev: pd.DataFrame, msg_name: str, round_trips: int) -> pd.Series:
    """Send/recv time per connection: the sum of its round trips (complete connections only)."""
    msgs = ev[ev["name"] == msg_name]
    if msgs.empty:
        return pd.Series(dtype=float)
    keys = ["worker", "conn_id"] if "worker" in msgs else ["conn_id"]
    grouped = msgs.groupby(keys)["latency_ns"].agg(["sum", "count"])
    complete = grouped[grouped["count"] == round_trips]
    return complete["sum"] / 1e6


def _quantile(values: pd.Series, q: float) -> float:
    return float(np.quantile(values.to_numpy(), q)) if len(values) else math.nan


def table(cells: list[CellRun], plan: dict[str, Any]) -> pd.DataFrame:
    conns, rts = int(plan["connections_per_user"]), int(plan["round_trips"])
    records = []
    for o in cells:
        rows = st.summary_rows(o.results)
        (c_name, connect), (m_name, msg), (s_name, session) = (
            st.phase(rows, ph) for ph in ("connect", "msg", "session")
        )
        ev = st.events(o.results)
        per_conn = (
            _per_connection_ms(ev, m_name, rts) if st.fully_sampled(ev) else pd.Series(dtype=float)
        )
        wall = st.span_s(ev, c_name, s_name)
        expected = o.users * conns
        ok_rts = st.count(msg) - st.count(msg, "failures")
        records.append(
            {
                "users": o.key["users"],
                "model": o.key["model"],
                "rep": int(o.key.get("rep", 1)),
                "status": o.status,
                "connections": f"{st.count(session)}/{expected}",
                "errors": sum(int(r.get("failures") or 0) for r in rows.values()),
                "connect_p50_ms": st.fig(connect, "p50_ms"),
                "connect_p99_ms": st.fig(connect, "p99_ms"),
                "rt_p50_ms": st.fig(msg, "p50_ms"),
                "rt_p99_ms": st.fig(msg, "p99_ms"),
                "conn_rt_p50_ms": _quantile(per_conn, 0.5),
                "conn_rt_p99_ms": _quantile(per_conn, 0.99),
                "total_p50_ms": st.fig(session, "p50_ms"),
                "total_p99_ms": st.fig(session, "p99_ms"),
                "total_mean_ms": st.fig(session, "mean_ms"),
                "top_error": st.top_error(ev),
                "wall_s": wall,
                "rt_per_s": ok_rts / wall if wall and not math.isnan(wall) else math.nan,
                "cell_s": round(o.wall_s, 1),
                "results": str(o.results),
            }
        )
    df = pd.DataFrame.from_records(records)
    df["rank"] = ranks(df)
    return df


def ranks(df: pd.DataFrame) -> list[str]:
    """Rank by total p50 within a users level; a cell with errors or not done ranks after every
    clean one (its percentiles only cover the connections that succeeded) and is starred."""
    clean = (df["status"] == "done") & (df["errors"] == 0)
    key = df["total_p50_ms"].fillna(math.inf) + (~clean) * 1e12
    order = key.groupby([df["users"], df["rep"]]).rank(method="min")
    return [
        f"{int(r)}" if ok else f"{int(r)}*" if not math.isnan(p) else ""
        for r, ok, p in zip(order, clean, df["total_p50_ms"], strict=True)
    ]


def notes(df: pd.DataFrame) -> list[str]:
    out = [
        "Times in ms (wall in s). Latencies from merged HDR histograms; send/recv per conn is the",
        "sum of a connection's round trips (from events.parquet). Rank: total per conn p50 within",
        "a users level; * = the cell had errors or was capped, ranked after the clean ones (its",
        "percentiles cover only what succeeded). capped = the cell's time limit came before every",
        "connection was made; partial = a worker's data was lost (see the cell's run.json).",
    ]
    for _, r in df[(df["status"] != "done") | (df["errors"] > 0)].iterrows():
        why = f"; most: {r['top_error']}" if r["top_error"] else ""
        out.append(
            f"- {r['model']} at {r['users']} users: {r['status']}, {r['connections']} "
            f"connections, {r['errors']} errors{why}."
        )
    out += select_vs_epoll(df)
    return out


def select_vs_epoll(df: pd.DataFrame) -> list[str]:
    """The seed's puzzle, per users level: which of the two wins on total per conn p50."""
    out = []
    if "status" in df:  # only cells that did all their work cleanly
        df = df[(df["status"] == "done") & (df["errors"] == 0)]
    for users, group in df.groupby("users"):
        p50 = group.pivot_table(index="rep", columns="model", values="total_p50_ms")
        if not {"select", "epoll"} <= set(p50.columns):
            continue
        pair = p50[["select", "epoll"]].dropna()
        if pair.empty:
            continue
        s, e = pair["select"].median(), pair["epoll"].median()
        faster = "epoll" if e < s else "select"
        runs = len(pair)
        wins = int((pair["epoll"] < pair["select"]).sum())
        tally = f" (epoll faster in {wins} of {runs} runs)" if runs > 1 else ""
        what = "median total p50" if runs > 1 else "total p50"
        out.append(
            f"- {users} users: select {what} {st.fmt(s)} ms vs epoll {st.fmt(e)} ms — "
            f"{faster} faster{tally}."
        )
    return out


def render(df: pd.DataFrame, sweep_dir: Path, plan: dict[str, Any]) -> list[Path]:
    headers = dict(HEADERS)
    if df["rep"].nunique() > 1:
        headers = {"rep": "run", **headers}
    files = st.write_outputs(df, sweep_dir, headers, notes(df))
    files.append(plot(df, sweep_dir / "sweep.png"))
    return files


def plot(df: pd.DataFrame, path: Path) -> Path:
    """One panel per users level: total per connection p50 (bar) and p99 (tick) per model
    (medians over repeats)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from analysis.plots import log_ticks, suptitle

    df = df.assign(clean=(df["status"] == "done") & (df["errors"] == 0))
    agg = {"total_p50_ms": "median", "total_p99_ms": "median", "clean": "all"}
    df = df.groupby(["users", "model"], as_index=False).agg(agg)
    levels = sorted(df["users"].unique())
    fig, axes = plt.subplots(
        1,
        len(levels),
        figsize=(max(6.0, 4.5 * len(levels)), 4.6),
        squeeze=False,
        layout="constrained",
    )
    for ax, users in zip(axes[0], levels, strict=True):
        g = df[df["users"] == users].sort_values("total_p50_ms", na_position="last")
        y = np.arange(len(g))
        colors = ["#4a7" if ok else "#c44" for ok in g["clean"]]
        ax.barh(y, g["total_p50_ms"].fillna(0), color=colors)
        ax.plot(g["total_p99_ms"], y, "k|", markersize=12)
        ax.set_yticks(y, labels=list(g["model"]))
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("total per connection, ms (log)")
        ax.set_title(f"{users} users")
        ax.grid(axis="x", which="major", alpha=0.3)
    fig.legend(
        handles=[
            Patch(color="#4a7", label="p50, clean cell"),
            Patch(color="#c44", label="p50, errors or capped"),
            plt.Line2D([], [], color="k", marker="|", linestyle="", markersize=12, label="p99"),
        ],
        loc="outside lower center",
        ncol=3,
        fontsize=8,
    )
    suptitle(fig, "S003: TCP server models — total time per connection (median over runs)")
    for ax in axes[0]:
        log_ticks(ax, "x")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
