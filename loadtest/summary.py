"""The load-test summary: Locust's final statistics reduced to what a person reads first.

Locust writes its final per-request statistics with ``--json-file`` (its CSV files are
refreshed on a timer and can miss the last second). `summarize` keeps users, duration,
requests per second, p50/p95/p99, max and failures, overall and per request kind. The
percentiles follow Locust's own algorithm over its response-time histogram; Locust's
``StatsEntry`` is not imported because importing ``locust`` monkey-patches the process
with gevent, which breaks Django's per-thread database connections. `write_summary`
stores ``summary.json`` and ``summary.md`` beside Locust's HTML report and CSVs.

The window is Locust's own, so that the summary and locust.html agree: from the start
time of its aggregated entry (the runner's creation, before the first user: the
``locustfile`` saves that entry as ``locust_total.json``) to the last request, and every
kind's RPS is its requests over that whole window (``StatsEntry.total_rps``). A run whose
locustfile did not save the entry (the anchor's) falls back to the first to last request.
"""

import json
from collections import Counter
from pathlib import Path

TOTAL = "total"
LOCUST_WINDOW = "Locust's: its runner's start to the last request, as locust.html counts it"
REQUESTS_WINDOW = "the first to the last request (Locust's start time was not saved)"


def read_stats(path: Path) -> list[dict]:
    """Entries of Locust's ``--json-file`` output; raises `FileNotFoundError` if missing."""
    return json.loads(Path(path).read_text())


def read_total(path: Path) -> dict | None:
    """Locust's aggregated entry saved by the ``locustfile``; None if it was not saved."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def window(entries: list[dict], total: dict | None = None) -> dict:
    """``{"start", "end", "seconds", "counted"}``: the seconds that RPS divides by."""
    if total is not None and total.get("last_request_timestamp"):
        start, end, counted = total["start_time"], total["last_request_timestamp"], LOCUST_WINDOW
    else:
        start = min(entry["start_time"] for entry in entries)
        end = max(entry["last_request_timestamp"] or start for entry in entries)
        counted = REQUESTS_WINDOW
    return {"start": start, "end": end, "seconds": end - start, "counted": counted}


def percentile(histogram: Counter, fraction: float) -> int:
    """The response time (ms) that ``fraction`` of the requests finished within.

    ``histogram`` maps Locust's rounded response times to counts; same method as
    ``locust.stats.calculate_response_time_percentile``.
    """
    count = sum(histogram.values())
    within = int(count * fraction)
    seen = 0
    for time_ms in sorted(histogram, reverse=True):
        seen += histogram[time_ms]
        if count - seen <= within:
            return time_ms
    return 0


def histogram(entries: list[dict]) -> Counter:
    """Response time (ms, as Locust rounds it) -> requests, over ``entries``."""
    merged = Counter()
    for entry in entries:
        merged.update({int(ms): n for ms, n in entry["response_times"].items()})
    return merged


def _figures(entries: list[dict], seconds: float) -> dict:
    times = histogram(entries)
    requests = sum(entry["num_requests"] for entry in entries)
    return {
        "requests": requests,
        "failures": sum(entry["num_failures"] for entry in entries),
        "rps": round(requests / max(seconds, 1e-9), 1),
        "p50_ms": percentile(times, 0.50),
        "p95_ms": percentile(times, 0.95),
        "p99_ms": percentile(times, 0.99),
        "max_ms": round(max(entry["max_response_time"] or 0 for entry in entries)),
    }


def summarize(entries: list[dict], *, users: int, total: dict | None = None) -> dict:
    """``{"users", "duration_s", "window", "total": {...}, "kinds": {name: {...}}}``.

    ``total``: Locust's aggregated entry (`read_total`), whose start opens the `window`.
    Each figure set holds requests, failures, rps (requests over the window), p50_ms,
    p95_ms, p99_ms and max_ms. Raises `ValueError` when no request was recorded.
    """
    if not any(entry["num_requests"] for entry in entries):
        raise ValueError("Locust recorded no requests")
    span = window(entries, total)
    seconds = span["seconds"]
    return {
        "users": users,
        "duration_s": round(seconds, 1),
        "window": span,
        TOTAL: _figures(entries, seconds),
        "kinds": {
            entry["name"]: _figures([entry], seconds)
            for entry in sorted(entries, key=lambda e: e["name"])
        },
    }


def render_markdown(summary: dict) -> str:
    """The summary as a Markdown table, one line per request kind and one for the total."""
    total = summary[TOTAL]
    verdict = "0 failures" if total["failures"] == 0 else f"**{total['failures']} failures**"
    lines = [
        "# Load test summary",
        "",
        f"{summary['users']} users, {summary['duration_s']} s: "
        f"{total['rps']} requests/s, {verdict}.",
        "",
    ]
    server = summary.get("run", {}).get("server")
    if server:
        lines += [f"Server: {server['name']}, proxy: {server['proxy']}.", ""]
    lines += [
        "| request | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in [*summary["kinds"].items(), ("**total**", total)]:
        lines.append(
            f"| {name} | {f['requests']} | {f['failures']} | {f['rps']} | {f['p50_ms']} "
            f"| {f['p95_ms']} | {f['p99_ms']} | {f['max_ms']} |"
        )
    lines += ["", f"Duration and requests/s count one window: {summary['window']['counted']}."]
    if summary.get("thresholds"):
        lines += ["", "| threshold | limit | this run | result |", "|---|---|---:|---|"]
        for check in summary["thresholds"]:
            result = "pass" if check["passed"] else "**fail**"
            lines.append(f"| {check['name']} | {check['limit']} | {check['actual']} | {result} |")
    for comparison in summary.get("comparisons") or []:
        lines += ["", comparison_line(comparison)]
    if summary.get("cpu_warning"):
        lines += [
            "",
            f"**Locust ran out of CPU**: the figures are the load generator's limit "
            f"(`{summary['cpu_warning']}`).",
        ]
    return "\n".join(lines) + "\n"


def comparison_line(comparison: dict) -> str:
    """A comparison (`loadtest.compare.compared`) in one line: the totals' changes, and
    the settings that differ."""
    changes = ", ".join(
        f"{row['name']} {row['change']} ({row['verdict']})"
        for row in comparison["rows"]
        if row["verdict"]
    )
    line = f"Compared with the {comparison['label']}: {changes or 'nothing comparable'}."
    if comparison["differences"]:
        differ = "; ".join(
            f"{d['name']} {d['this']} here, {d['other']} there" for d in comparison["differences"]
        )
        line += f" **Not the same test**: {differ}."
    return line


def write_summary(summary: dict, reports: Path) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``summary.md`` into ``reports``; returns both paths."""
    reports.mkdir(parents=True, exist_ok=True)
    json_path, md_path = reports / "summary.json", reports / "summary.md"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    md_path.write_text(render_markdown(summary))
    return json_path, md_path
