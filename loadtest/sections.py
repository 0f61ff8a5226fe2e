"""The report's sections, in page order: each a function of the run's data (`RunData`)
that returns one section for ``loadtest/report.html``, or None when it has nothing to show.

A section is ``{"id", "title", "template", ...}``: the template (under
``loadtest/sections/``) draws it from the rest, which it reads as ``section``. Charts
come from `loadtest.charts.time_chart` and are drawn by ``loadtest/chart.html``. A new
panel, such as the server's own metrics over the same seconds, is one more function in
`SECTIONS` and one more template.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

from loadtest import charts, compare
from loadtest.summary import TOTAL, histogram

AGGREGATED = "Aggregated"  # Locust's name for all requests in its history
ALL = "all requests"
# (history key, label, colour): blue, orange, vermillion, as Grafana's defaults order them.
PERCENTILES = (("p50", "p50", "#0072B2"), ("p95", "p95", "#E69F00"), ("p99", "p99", "#D55E00"))
FAILURE_COLOR = "#c0392b"


@dataclass(frozen=True)
class RunData:
    """What every section reads: the summary (`loadtest.summary.summarize` and the command's
    additions), Locust's per-kind entries (``locust.json``) and history (`read_history`)."""

    summary: dict
    entries: list[dict]
    history: dict[str, list[dict]]

    @property
    def seconds(self) -> float:
        return self.summary["window"]["seconds"]

    def over_time(self, name: str) -> list[dict]:
        """``name``'s history rows, ``t`` in seconds into the window (from 0)."""
        start = self.summary["window"]["start"]
        return [{**row, "t": max(row["t"] - start, 0)} for row in self.history.get(name, [])]

    @property
    def ramp_up_s(self) -> float | None:
        """When the last user had started, seconds into the window: recorded by the
        locustfile (the steady state's start), else the first second of the history with
        the most users; None when neither says."""
        steady = self.summary.get("steady")
        if steady:
            return steady["start_s"]
        rows = self.over_time(AGGREGATED)
        most = max((row["users"] for row in rows), default=0)
        return next((row["t"] for row in rows if row["users"] == most), None) if most else None


def read_history(path: Path) -> dict[str, list[dict]]:
    """Locust's stats history (``locust_stats_history.csv``) per request kind
    (``Aggregated``: all): rows of ``t`` (its timestamp, s), users, rps, fps (failures/s)
    and p50/p90/p95/p99 (ms) of its last ~10 s (None: no request then)."""
    if not Path(path).exists():
        return {}
    kinds: dict[str, list[dict]] = {}
    with Path(path).open(newline="") as file:
        for row in csv.DictReader(file):
            kinds.setdefault(row["Name"], []).append(
                {
                    "t": int(row["Timestamp"]),
                    "users": int(row["User Count"]),
                    "rps": float(row["Requests/s"]),
                    "fps": float(row["Failures/s"]),
                    **{f"p{p}": _ms(row[f"{p}%"]) for p in (50, 90, 95, 99)},
                }
            )
    return kinds


def _ms(text: str) -> int | None:
    return None if text in ("", "N/A") or int(float(text)) == 0 else int(float(text))


def section(id: str, title: str, template: str | None = None, **content) -> dict:
    """A section: its anchor ``id``, heading, template (``loadtest/sections/<id>.html``
    unless named) and what the template reads."""
    path = f"loadtest/sections/{template or id}.html"
    return {"id": id, "title": title, "template": path, **content}


def headline(run: RunData) -> dict:
    return section("headline", "Headline", steady=run.summary.get("steady"))


def thresholds(run: RunData) -> dict:
    return section("thresholds", "Thresholds", checks=run.summary.get("thresholds") or [])


def compared(run: RunData) -> dict:
    return section(
        "compared",
        "Compared",
        comparisons=run.summary.get("comparisons") or [],
        same_within=round(100 * compare.SAME_WITHIN),
    )


def over_time(run: RunData) -> dict | None:
    """Three charts: the percentiles of all requests, throughput and failures, and one
    p95 line per request kind; the users and the ramp-up on each."""
    rows = run.over_time(AGGREGATED)
    if not rows:
        return None
    users = [(row["t"], row["users"]) for row in rows]
    frame = {"seconds": run.seconds, "ramp_up_s": run.ramp_up_s}
    percentiles = [
        {"label": label, "color": color, "points": _points(rows, key)}
        for key, label, color in PERCENTILES
    ]
    throughput = [
        {"label": "requests/s", "color": charts.PALETTE[2], "points": _points(rows, "rps")},
        {"label": "failures/s", "color": FAILURE_COLOR, "points": _points(rows, "fps")},
    ]
    by_kind = [
        {"label": name, "color": color, "points": _points(run.over_time(name), "p95")}
        for name, color in zip(run.summary["kinds"], _colors(), strict=False)
    ]
    panels = [
        (
            "Response times, all requests",
            charts.time_chart(
                percentiles, unit="ms", y_label="response time", users=users, **frame
            ),
        ),
        (
            "Throughput and failures, all requests",
            charts.time_chart(throughput, unit="", y_label="per second", users=users, **frame),
        ),
        (
            "p95 by request kind",
            charts.time_chart(by_kind, unit="ms", y_label="p95 response time", **frame),
        ),
    ]
    return section(
        "over-time",
        "Over time",
        "over_time",
        panels=[{"title": title, "chart": chart} for title, chart in panels],
        ramp_up_s=run.ramp_up_s,
    )


def _points(rows: list[dict], key: str) -> list[tuple]:
    return [(row["t"], row[key]) for row in rows]


def _colors():
    """The palette, again and again: more kinds than colours repeat them."""
    while True:
        yield from charts.PALETTE


def request_kinds(run: RunData) -> dict:
    """Locust's per-endpoint table and more: every figure, and the answers by status code."""
    methods = {entry["name"]: entry.get("method") or "" for entry in run.entries}
    rows = [{"name": ALL, "method": "", "figures": run.summary[TOTAL], "all": True}]
    rows += [
        {"name": name, "method": methods.get(name, ""), "figures": figures, "all": False}
        for name, figures in run.summary["kinds"].items()
    ]
    for row in rows:
        row["codes"] = status_codes(row["figures"].get("status_codes"))
    return section("kinds", "Request kinds", rows=rows)


def status_codes(codes: dict | None) -> list[dict] | None:
    """``[{"code", "count", "ok"}]`` by code (0 is ``no answer``); None: not recorded."""
    if codes is None:
        return None
    return [
        {
            "code": "no answer" if int(code) == 0 else str(code),
            "count": count,
            "ok": 200 <= int(code) < 400,
        }
        for code, count in sorted(codes.items(), key=lambda item: int(item[0]))
    ]


def steady_state(run: RunData) -> dict:
    """The figures after the ramp-up, per kind, beside the whole run's p95."""
    steady = run.summary.get("steady")
    rows = []
    if steady:
        rows = [{"name": ALL, "figures": steady[TOTAL], "whole": run.summary[TOTAL], "all": True}]
        rows += [
            {"name": name, "figures": figures, "whole": run.summary["kinds"][name], "all": False}
            for name, figures in steady["kinds"].items()
        ]
    return section("steady", "After the ramp-up", steady=steady, rows=rows)


def failures(run: RunData) -> dict:
    """Every failure Locust counted, with its message, most frequent first."""
    requests = {name: figures["requests"] for name, figures in run.summary["kinds"].items()}
    listed = [
        {
            **error,
            "share": round(100 * error["occurrences"] / max(requests.get(error["name"], 1), 1), 2),
        }
        for error in run.summary.get("failures") or []
    ]
    return section("failures", "Failures", failures=listed, failed=run.summary[TOTAL]["failures"])


def distribution(run: RunData) -> dict:
    """Requests by latency band, per kind and for all."""
    by_name = {entry["name"]: entry for entry in run.entries}
    rows = [{"name": ALL, "bands": charts.latency_bands(histogram(run.entries)), "all": True}]
    rows += [
        {"name": name, "bands": charts.latency_bands(by_name[name]["response_times"]), "all": False}
        for name in run.summary["kinds"]
        if name in by_name
    ]
    return section(
        "distribution",
        "Latency distribution",
        rows=rows,
        legend=charts.latency_bands({}),
        bar_width=charts.BAR_WIDTH,
    )


def the_run(run: RunData) -> dict:
    return section("run", "The run", "the_run")


def files(run: RunData) -> dict:
    return section("files", "Files")


SECTIONS = (
    headline,
    thresholds,
    compared,
    over_time,
    request_kinds,
    steady_state,
    failures,
    distribution,
    the_run,
    files,
)


def build(run: RunData) -> list[dict]:
    """Every section of `SECTIONS` that has something to show, in order."""
    return [built for make in SECTIONS if (built := make(run)) is not None]
