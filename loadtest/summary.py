"""The load-test summary: Locust's final statistics reduced to what a person reads first.

Locust writes its final per-request statistics with ``--json-file`` (its CSV files are
refreshed on a timer and can miss the last second). `summarize` keeps users, duration and,
overall and per request kind, every figure of Locust's own table (requests, failures,
requests per second, average, minimum, maximum, p50/p90/p95/p99/p99.9, average response
size) with the answers by status code, the same after the ramp-up (`steady_state`), and
the failures with their messages (``locust_run.json``, saved by the ``locustfile``). The
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


def _figures(entries: list[dict], seconds: float, *, status_codes: dict | None = None) -> dict:
    """Locust's per-endpoint figures over ``entries`` (one kind, or all), RPS over
    ``seconds``: requests, failures (and their share, %), rps, avg/min/max and the
    p50/p90/p95/p99/p99.9 response times (ms), avg_bytes (response size) and, when
    recorded, status_codes (``{"200": n}``). min/max are None for a steady state (a
    difference of two snapshots has neither)."""
    times = histogram(entries)
    requests = sum(entry["num_requests"] for entry in entries)
    failures = sum(entry["num_failures"] for entry in entries)
    counted = max(requests, 1)
    mins = [e.get("min_response_time") for e in entries if e["num_requests"]]
    maxes = [e.get("max_response_time") for e in entries]
    figures = {
        "requests": requests,
        "failures": failures,
        "failure_pct": round(100 * failures / counted, 2),
        "rps": round(requests / max(seconds, 1e-9), 1),
        "avg_ms": round(sum(e["total_response_time"] for e in entries) / counted, 1),
        "min_ms": round(min(mins), 1) if mins and None not in mins else None,
        "p50_ms": percentile(times, 0.50),
        "p90_ms": percentile(times, 0.90),
        "p95_ms": percentile(times, 0.95),
        "p99_ms": percentile(times, 0.99),
        "p999_ms": percentile(times, 0.999),
        "max_ms": round(max(m or 0 for m in maxes)) if None not in maxes else None,
        "avg_bytes": round(sum(e.get("total_content_length", 0) for e in entries) / counted),
    }
    if status_codes is not None:
        figures["status_codes"] = status_codes
    return figures


def read_details(path: Path) -> dict:
    """What the ``locustfile`` saved beside Locust's files (``locust_run.json``): status
    codes per kind, failures, the ramp-up's end; empty when it was not saved."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def summarize(
    entries: list[dict], *, users: int, total: dict | None = None, details: dict | None = None
) -> dict:
    """``{"users", "duration_s", "window", "total": {...}, "kinds": {name: {...}},
    "steady": {...} | None, "failures": [...]}``.

    ``total``: Locust's aggregated entry (`read_total`), whose start opens the `window`;
    ``details``: `read_details`. Each figure set is `_figures`'; ``steady`` the same after
    the ramp-up (`steady_state`); ``failures`` Locust's failures with their messages, most
    frequent first. Raises `ValueError` when no request was recorded.
    """
    if not any(entry["num_requests"] for entry in entries):
        raise ValueError("Locust recorded no requests")
    details = details or {}
    span = window(entries, total)
    seconds = span["seconds"]
    codes = details.get("status_codes")
    entries = sorted(entries, key=lambda e: e["name"])
    return {
        "users": users,
        "duration_s": round(seconds, 1),
        "window": span,
        TOTAL: _figures(entries, seconds, status_codes=merged_codes(codes)),
        "kinds": {
            entry["name"]: _figures(
                [entry],
                seconds,
                status_codes=None if codes is None else codes.get(entry["name"], {}),
            )
            for entry in entries
        },
        "steady": steady_state(entries, span, details.get("spawned")),
        "failures": sorted(
            details.get("errors") or [], key=lambda error: (-error["occurrences"], error["name"])
        ),
    }


def merged_codes(codes: dict | None) -> dict | None:
    """Every kind's status codes added up (None: not recorded)."""
    if codes is None:
        return None
    merged = Counter()
    for kind in codes.values():
        merged.update({str(code): n for code, n in kind.items()})
    return dict(sorted(merged.items()))


def steady_state(entries: list[dict], span: dict, spawned: dict | None) -> dict | None:
    """The figures after the ramp-up: each entry less its snapshot when the last user had
    started (``spawned``: ``at``, ``users``, ``entries``), RPS over the rest of the window.
    ``{"start_s" (into the window), "seconds", "users", "total", "kinds"}``; None when the
    ramp-up was not recorded or nothing was requested after it."""
    if not spawned or spawned["at"] >= span["end"]:
        return None
    before = {entry["name"]: entry for entry in spawned["entries"]}
    after = [_less(entry, before.get(entry["name"])) for entry in entries]
    if not any(entry["num_requests"] for entry in after):
        return None
    seconds = span["end"] - spawned["at"]
    return {
        "start_s": round(spawned["at"] - span["start"], 1),
        "seconds": round(seconds, 1),
        "users": spawned["users"],
        TOTAL: _figures(after, seconds),
        "kinds": {entry["name"]: _figures([entry], seconds) for entry in after},
    }


def _less(entry: dict, before: dict | None) -> dict:
    """``entry``'s requests since ``before`` (a snapshot of the same kind), without a
    minimum or maximum (a difference cannot say them)."""
    before = before or {"response_times": {}}
    times = Counter({int(ms): n for ms, n in entry["response_times"].items()})
    times.subtract({int(ms): n for ms, n in before["response_times"].items()})
    return {
        "name": entry["name"],
        "num_requests": entry["num_requests"] - before.get("num_requests", 0),
        "num_failures": entry["num_failures"] - before.get("num_failures", 0),
        "total_response_time": entry["total_response_time"] - before.get("total_response_time", 0),
        "total_content_length": entry.get("total_content_length", 0)
        - before.get("total_content_length", 0),
        "response_times": {ms: n for ms, n in times.items() if n > 0},
        "min_response_time": None,
        "max_response_time": None,
    }


def render_markdown(summary: dict) -> str:
    """The summary as Markdown: the headline, one table line per request kind and one for
    the total (Locust's figures), the steady state, thresholds, comparisons, failures."""
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
        "| request | requests | failures | req/s | avg ms | min ms | p50 ms | p90 ms "
        "| p95 ms | p99 ms | p99.9 ms | max ms | avg bytes |",
        "|---|" + "---:|" * 12,
    ]
    for name, f in [*summary["kinds"].items(), ("**total**", total)]:
        lines.append(
            f"| {name} | " + " | ".join(_cell(f.get(key)) for key in MARKDOWN_COLUMNS) + " |"
        )
    lines += ["", f"Duration and requests/s count one window: {summary['window']['counted']}."]
    steady = summary.get("steady")
    if steady:
        figures = steady[TOTAL]
        lines += [
            "",
            f"After the ramp-up ({steady['users']} users from {steady['start_s']} s, "
            f"{steady['seconds']} s): {figures['rps']} requests/s, p50 {figures['p50_ms']} ms, "
            f"p95 {figures['p95_ms']} ms, p99 {figures['p99_ms']} ms.",
        ]
    lines += server_side_lines(summary.get("server_side"))
    if summary.get("thresholds"):
        lines += ["", "| threshold | limit | this run | result |", "|---|---|---:|---|"]
        for check in summary["thresholds"]:
            result = "pass" if check["passed"] else "**fail**"
            lines.append(f"| {check['name']} | {check['limit']} | {check['actual']} | {result} |")
    for comparison in summary.get("comparisons") or []:
        lines += ["", comparison_line(comparison)]
    if summary.get("failures"):
        lines += ["", "Failures, most frequent first:"]
        for error in summary["failures"][:MARKDOWN_FAILURES]:
            lines.append(
                f"- {error['occurrences']} × {error['method']} {error['name']}: {error['message']}"
            )
    if summary.get("cpu_warning"):
        lines += [
            "",
            f"**Locust ran out of CPU**: the figures are the load generator's limit "
            f"(`{summary['cpu_warning']}`).",
        ]
    return "\n".join(lines) + "\n"


def server_side_lines(side: dict | None) -> list[str]:
    """The bottleneck's sentence and the server's figures after the ramp-up
    (`loadtest.server_side.figures`), or why there are none; nothing for a run from before
    they were recorded."""
    if not side:
        return []
    lines = [""]
    if side.get("bottleneck"):
        lines += [f"Bottleneck: {side['bottleneck']['sentence']}", ""]
    if not side["available"]:
        return [*lines, side["reason"]]
    reads = side["reads"]
    return [
        *lines,
        f"Server side after the ramp-up (Prometheus): p50 {side['server_p50_ms']} ms, "
        f"p95 {side['server_p95_ms']} ms, p99 {side['server_p99_ms']} ms (Locust's p95 "
        f"{side['client_p95_ms']} ms); database {side['db_time_share_pct']}% of the server's "
        f"time; {reads['replica']} queries on replicas, {reads['primary']} on primaries; "
        f"{side['breaker_trips']} breaker trips.",
    ]


MARKDOWN_COLUMNS = ("requests", "failures", "rps", "avg_ms", "min_ms", "p50_ms", "p90_ms")
MARKDOWN_COLUMNS += ("p95_ms", "p99_ms", "p999_ms", "max_ms", "avg_bytes")
MARKDOWN_FAILURES = 5


def _cell(value) -> str:
    return "-" if value is None else str(value)


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
