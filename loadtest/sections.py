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
from loadtest import server_side as server_side_figures
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
    server_metrics: dict | None = None  # server-metrics.json (loadtest.prometheus)
    processes: dict | None = None  # processes.json (loadtest.sampler)

    @property
    def seconds(self) -> float:
        return self.summary["window"]["seconds"]

    def over_time(self, name: str) -> list[dict]:
        """``name``'s history rows, ``t`` in seconds into the window (from 0)."""
        start = self.summary["window"]["start"]
        return [{**row, "t": max(row["t"] - start, 0)} for row in self.history.get(name, [])]

    def since_start(self, t: float) -> float:
        """Unix seconds ``t`` as seconds into the window."""
        return round(t - self.summary["window"]["start"], 3)

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


def server_side(run: RunData) -> dict | None:
    """The server's side over the same seconds (`loadtest.server_side`'s figures, and the
    series Prometheus and psutil recorded): response times by route, requests by status
    class, CPU and memory per process, the database's share, queries on replicas and
    primaries, breaker trips. Without Prometheus, the sentence saying why and the
    processes psutil saw."""
    figures = run.summary.get("server_side")
    if figures is None:
        return None  # a run from before the server's side was recorded
    frame = {"seconds": run.seconds, "ramp_up_s": run.ramp_up_s}
    ranges = (run.server_metrics or {}).get("ranges") or {}
    panels = []
    if figures["available"]:
        for key, title in (("p50", "p50"), ("p95", "p95"), ("p99", "p99")):
            lines = _prometheus_lines(run, ranges, f"{key}_by_route", route_label, scale=1000)
            panels.append(
                (
                    f"Server {title} by route",
                    charts.time_chart(lines, unit="ms", y_label=f"server {title}", **frame),
                )
            )
        lines = _prometheus_lines(run, ranges, "requests_by_status", status_label)
        panels.append(
            (
                "Server requests/s by status class",
                charts.time_chart(lines, unit="", y_label="per second", **frame),
            )
        )
    cpu, memory = process_lines(run, figures)
    if cpu:
        panels.append(
            (
                "CPU per process",
                charts.time_chart(cpu, unit="% of a core", y_label="CPU", **frame),
            )
        )
        panels.append(
            ("Memory per process", charts.time_chart(memory, unit="MB", y_label="RSS", **frame))
        )
    breakers = None
    if figures["available"]:
        share = _prometheus_lines(run, ranges, "db_time_share", lambda _: "database", scale=100)
        panels.append(
            (
                "Database time, share of the server's time",
                charts.time_chart(share, unit="%", y_label="database time", **frame),
            )
        )
        reads = _prometheus_lines(run, ranges, "queries_by_alias", alias_label)
        panels.append(
            (
                "Queries/s by database alias: replicas and primaries",
                charts.time_chart(reads, unit="", y_label="queries per second", **frame),
            )
        )
        trips = _prometheus_lines(run, ranges, "breaker_trips", server_side_figures.breaker_name)
        if any(value for line in trips for _, value in line["points"]):
            panels.append(
                (
                    "Breaker trips (per 5 s)",
                    charts.time_chart(trips, unit="", y_label="trips", **frame),
                )
            )
        else:
            breakers = "No breaker opened during the run." + (
                f" ({len(trips)} watched: {', '.join(line['label'] for line in trips)}.)"
                if trips
                else ""
            )
    return section(
        "server",
        "Server side",
        "server_side",
        figures=figures,
        panels=[{"title": title, "chart": chart} for title, chart in panels],
        breakers=breakers,
        processes=figures["processes"][:PROCESS_ROWS],
        more_processes=max(len(figures["processes"]) - PROCESS_ROWS, 0),
    )


PROCESS_ROWS = 12
MB = 1024 * 1024


def route_label(labels: dict) -> str:
    """``api/run-query/ user_id``: a route, and the lookup key when there is one."""
    return " ".join(part for part in (labels.get("route"), labels.get("key")) if part) or "-"


def status_label(labels: dict) -> str:
    return labels.get("status") or "-"


def alias_label(labels: dict) -> str:
    alias = labels.get("alias") or "-"
    return f"{alias} (replica)" if server_side_figures.is_replica(alias) else alias


def _prometheus_lines(
    run: RunData, ranges: dict, name: str, label, *, scale: float = 1
) -> list[dict]:
    """One line per series of ``ranges[name]`` (`loadtest.prometheus.RANGE_QUERIES`),
    labelled by ``label(labels)``, values times ``scale``, sorted by label."""
    series = sorted((ranges.get(name) or {}).get("series") or [], key=lambda s: label(s["labels"]))
    return [
        {
            "label": label(item["labels"]),
            "color": color,
            "points": [
                (run.since_start(t), None if v is None else round(v * scale, 3))
                for t, v in item["values"]
                if 0 <= run.since_start(t) <= run.seconds
            ],
        }
        for item, color in zip(series, _colors(), strict=False)
    ]


def process_lines(run: RunData, figures: dict) -> tuple[list[dict], list[dict]]:
    """Lines of CPU (% of one core) and RSS (MB) per process: the server's from Prometheus
    when it recorded them, the rest from psutil; PostgreSQL's processes summed per server
    (they come and go with connections), their memory as PSS (proportional: the shared
    buffers counted once). Empty when nothing was sampled."""
    server = (run.summary.get("run") or {}).get("server", {}).get("name") or "server"
    ranges = (run.server_metrics or {}).get("ranges") or {}
    scraped = figures["available"] and (ranges.get("cpu_by_process") or {}).get("series")
    cpu, memory = [], []
    if scraped:
        for item in ranges["cpu_by_process"]["series"]:
            name = scraped_process(item["labels"], server)
            cpu.append((name, [(t, v and v * 100) for t, v in item["values"]]))
        for item in (ranges.get("rss_by_process") or {}).get("series") or []:
            name = scraped_process(item["labels"], server)
            memory.append((name, [(t, v and v / MB) for t, v in item["values"]]))
    summed: dict[str, dict] = {}
    for series in (run.processes or {}).get("processes", []):
        if scraped and series["role"].startswith(server_side_figures.SERVER_ROLES):
            continue
        if series["role"].startswith("postgresql"):
            group = summed.setdefault(series["role"], {"cpu": {}, "rss": {}, "pids": set()})
            group["pids"].add(series["pid"])
            for t, c, rss, *pss in series["points"]:
                second = round(t)
                group["cpu"][second] = group["cpu"].get(second, 0) + (c or 0)
                group["rss"][second] = group["rss"].get(second, 0) + ((pss or [rss])[0] or 0)
            continue
        name = f"{series['role']} {series['pid']}"
        cpu.append((name, [(t, c) for t, c, *_ in series["points"]]))
        memory.append((name, [(t, rss and rss / MB) for t, _, rss, *_ in series["points"]]))
    for role, group in summed.items():
        name = f"{role} ({len(group['pids'])} processes)"
        cpu.append((name, sorted(group["cpu"].items())))
        # Their RSS counts the shared buffers once per process: PSS shares them out.
        memory.append((f"{name}, PSS", [(t, v / MB) for t, v in sorted(group["rss"].items())]))
    return _lines(run, cpu), _lines(run, memory)


def scraped_process(labels: dict, server: str) -> str:
    """``gunicorn worker 1234``: a server process Prometheus scraped."""
    return f"{server_side_figures.server_role(labels, server)} {labels.get('pid')}"


def _lines(run: RunData, named: list[tuple[str, list]]) -> list[dict]:
    return [
        {
            "label": name,
            "color": color,
            "points": [
                (run.since_start(t), None if v is None else round(v, 1))
                for t, v in points
                if 0 <= run.since_start(t) <= run.seconds
            ],
        }
        for (name, points), color in zip(named, _colors(), strict=False)
    ]


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
    server_side,
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
