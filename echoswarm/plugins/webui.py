"""An "echoswarm HDR" tab in Locust's web UI: merged HDR percentiles per transport/operation
and the sender lag of paced streams, updating live with Locust's own stats polling.

Locust's React UI shows extra tabs declared in ``template_args["extended_tabs"]`` and fills their
tables from ``extended_stats`` in the ``/stats/requests`` JSON it polls every 2 s; we add both.
The same data is served as JSON at ``/echoswarm/hdr`` and as CSV at ``/echoswarm/hdr.csv``.
Imported (and so registered) by :mod:`echoswarm.users.sink`; inert without a web UI.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from locust import events

TAB_KEY = "echoswarm-hdr"
COLUMNS = [
    ("request_type", "Transport"),
    ("name", "Name"),
    ("count", "# samples"),
    ("failures", "# fails"),
    ("rps", "Current /s"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p99_ms", "p99 ms"),
    ("p999_ms", "p99.9 ms"),
    ("max_ms", "max ms"),
    ("lag_p99_ms", "sender lag p99 ms"),
]


def table_rows(snapshot: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows for the tab from a :func:`echoswarm.plugins.collector.snapshot` dict (rounded)."""
    rows = []
    for r in (snapshot or {}).get("rows", []):
        row: dict[str, Any] = {}
        for key, _title in COLUMNS:
            value = r.get(key)
            if isinstance(value, float):
                value = round(value, 3)
            row[key] = "" if value is None else value
        rows.append(row)
    return rows


def _snapshot(environment: Any) -> dict[str, Any] | None:
    from echoswarm.plugins import collector as collect

    try:
        return collect.snapshot(environment)
    except Exception:  # never break Locust's own stats endpoint because of our tab
        return None


@events.init.add_listener
def _register(environment: Any, web_ui: Any = None, **_kw: Any) -> None:
    if web_ui is None:
        return
    from flask import Response, request

    web_ui.template_args["extended_tabs"] = [{"title": "echoswarm HDR", "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB_KEY, "structure": [{"key": k, "title": t} for k, t in COLUMNS]}
    ]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./echoswarm/hdr.csv", "title": "Download echoswarm HDR percentiles (CSV)"}
    ]

    @web_ui.app.after_request
    def _add_extended_stats(response: Response) -> Response:
        if not request.path.endswith("/stats/requests") or not response.is_json:
            return response
        body = response.get_json(silent=True)
        if isinstance(body, dict):
            rows = table_rows(_snapshot(environment))
            body["extended_stats"] = [{"key": TAB_KEY, "data": rows}]
            response.set_data(json.dumps(body))
        return response

    @web_ui.app.route("/echoswarm/hdr")
    def _hdr_json() -> Response:
        return Response(json.dumps(_snapshot(environment) or {}), mimetype="application/json")

    @web_ui.app.route("/echoswarm/hdr.csv")
    def _hdr_csv() -> Response:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[k for k, _ in COLUMNS])
        writer.writeheader()
        writer.writerows(table_rows(_snapshot(environment)))
        return Response(buf.getvalue(), mimetype="text/csv")
