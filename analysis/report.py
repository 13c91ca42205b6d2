"""The run report: ``report.md`` (with PNGs beside it) and a self-contained ``report.html``
(the same plots embedded as data URIs), written into the results directory."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from analysis import plots
from analysis.faults import fault_lines, gap_table
from analysis.load import Run
from analysis.summaries import (
    cell,
    connect_table,
    format_table,
    instrument_overhead,
    instrument_table,
    jitter_table,
    lag_table,
    markdown_table,
    summary_table,
    totals,
)

PLOTS = (
    ("spectrum", "Latency by percentile", plots.spectrum),
    ("cdf", "Latency CDF", plots.cdf),
    ("latency_over_time", "Latency over time", plots.latency_over_time),
    ("throughput_over_time", "Throughput over time", plots.throughput_over_time),
    ("comparison", "Per-transport comparison", plots.comparison_bars),
)


@dataclass
class Report:
    markdown: Path
    html: Path
    pngs: list[Path]
    summary: pd.DataFrame


def facts(run: Run) -> list[tuple[str, str]]:
    """The run's key facts as (label, text) pairs, for the report header."""
    r = run.run
    t = totals(run)
    workers = r.get("workers") or []
    lost = r.get("lost_workers") or []
    status = run.status_text
    out = [
        ("Scenario", str(r.get("scenario") or "?")),
        ("Status", status),
        (
            "Mode",
            f"{r.get('mode', '?')}, {len(workers)} worker process(es)"
            + (f", lost: {', '.join(map(str, lost))}" if lost else ""),
        ),
        ("Start / end (UTC)", f"{r.get('start_utc') or '?'} / {r.get('end_utc') or '-'}"),
        ("Duration", _num(run.duration_s, "s")),
        ("Samples", f"{t['count']:,} ({t['failures']:,} failed, {_pct(t['error_rate'])})"),
        ("Throughput", _num(t["rps"], "/s")),
        (
            "Events recorded",
            f"{r.get('events_rows_written', '?')} at sample rate "
            f"{r.get('events_sample_rate', '?')}"
            + (" (thinned under load: see run.json)" if r.get("events_thinned") else ""),
        ),
        ("Network path", _path(r)),
        ("summary.csv", _summary_check(r)),
        ("Git commit", str(r.get("git_commit") or "?")),
    ]
    return out


def _path(r: dict[str, Any]) -> str:
    w = r.get("wan")
    if isinstance(w, dict):
        return f"WAN emulated: {w.get('spec')} (user-space relay; see Faults and gaps)"
    return "direct"


def _summary_check(r: dict[str, Any]) -> str:
    check = r.get("summary_csv")
    if not isinstance(check, dict):
        return "not checked (run.json from before its row count and checksum were recorded)"
    return f"{check.get('rows')} rows, matches the row count and sha256 recorded in run.json"


Section = tuple[str, pd.DataFrame, list[str]]  # title, table, lines after it


def instrument_section(run: Run) -> Section | None:
    """The instrument's own cost, per transport, beside the results (None when the run has
    neither sender lag nor run.json ``instrument_overhead``)."""
    table = instrument_table(run)
    if table.empty:
        return None
    lag = table[table["lag_count"] > 0].iloc[:, :4].reset_index(drop=True)
    lines = []
    if not lag.empty:
        lines.append(
            "Sender lag: how late this run's load generator sent scheduled messages (merged lag "
            "histograms; latency is still timed from the intended send time)."
        )
    for transport, o in sorted(instrument_overhead(run).items()):
        how = [f"{o['streams']} streams"] if o["streams"] else []
        how += [o["measured_utc"]] if o["measured_utc"] else []
        lines.append(
            f"{transport}: instrument overhead p50 {o['p50_ms']:+.2f} ms, "
            f"p99 {o['p99_ms']:+.2f} ms over a lean reference client"
            + (f" ({', '.join(how)})" if how else "")
            + (f" — measured by {o['source']}" if o["source"] else "")
        )
    return ("Instrument", lag, lines)


def _num(v: Any, unit: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.1f} {unit}"


def _pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{100 * v:.2f}%"


def figures(run: Run) -> list[tuple[str, str, Figure]]:
    return [(key, title, make(run)) for key, title, make in PLOTS]


def write_report(run: Run) -> Report:
    """Write report.md, report.html and the PNGs into the run directory."""
    table = summary_table(run)
    instrument = instrument_section(run)
    sections: list[Section] = [
        ("Summary", table, []),
        ("Faults and gaps", gap_table(run), fault_lines(run)),
        *([instrument] if instrument else []),
        ("Connect times", connect_table(run), []),
        ("Jitter of paced streams", jitter_table(run), []),
        ("Sender lag of scheduled messages", lag_table(run), []),
    ]
    rendered = [(key, title, plots.png_bytes(fig)) for key, title, fig in figures(run)]
    pngs = []
    for key, _title, png in rendered:
        path = run.path / f"{key}.png"
        path.write_bytes(png)
        pngs.append(path)
    title = f"echoswarm report — {run.name}"
    md = [f"# {title}", ""]
    md += [f"- **{k}**: {v}" for k, v in facts(run)]
    for name, df, lines in sections:
        md += ["", f"## {name}"]
        md += ["", markdown_table(df)] if not (df.empty and lines) else []
        md += ["", *(f"- {line}" for line in lines)] if lines else []
    md += ["", "## Plots", ""]
    md += [f"![{t}]({k}.png)" for k, t, _ in rendered]
    md += ["", _NOTE]
    md_path = run.path / "report.md"
    md_path.write_text("\n".join(md) + "\n")
    html_path = run.path / "report.html"
    html_path.write_text(_html(title, facts(run), sections, rendered))
    return Report(md_path, html_path, pngs, table)


_NOTE = (
    "Percentiles come from HDR histograms (3 significant digits, 1 µs … 60 s) merged across "
    "workers, by nearest rank: at least p % of the samples are at or below the pNN figure. They "
    "cover successful samples, failures are counted separately. Scheduled messages are timed "
    "from their intended send time (no coordinated omission)."
)

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em}td.n{text-align:right}th{background:#f3f3f3}
div.wide{overflow-x:auto}dt{font-weight:bold}
img{max-width:100%;border:1px solid #eee;margin-bottom:1.5em}
"""


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(no rows)</em></p>"
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{html.escape(cell(v))}</td>'
            if num
            else f"<td>{html.escape(cell(v))}</td>"
            for v, num in zip(row, numeric, strict=True)
        )
        + "</tr>"
        for row in df.itertuples(index=False)
    )
    return (
        f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        "</div>"
    )


def _html(
    title: str,
    info: list[tuple[str, str]],
    sections: list[Section],
    rendered: list[tuple[str, str, bytes]],
) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><dl>"
    ]
    parts += [f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in info]
    parts.append("</dl>")
    for name, df, lines in sections:
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(_html_table(df) if not (df.empty and lines) else "")
        if lines:
            parts.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>")
    parts.append("<h2>Plots</h2>")
    for key, t, png in rendered:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure id="{key}"><img class="plot" alt="{html.escape(t)}" '
            f'src="data:image/png;base64,{data}"></figure>'
        )
    parts.append(f"<p>{html.escape(_NOTE)}</p></body></html>\n")
    return "".join(parts)


def summary_text(run: Run) -> str:
    return format_table(summary_table(run))
