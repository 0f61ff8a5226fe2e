"""The main job's report, from small hand-made Locust outputs: the window, latency bands,
thresholds, comparisons, Locust's CPU warning and the self-contained page."""

import json
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from loadtest import compare, report, runinfo, sections
from loadtest.charts import latency_bands, time_chart
from loadtest.checks import (
    FAILURES_BREACHED,
    MIN_RPS_BREACHED,
    P95_BREACHED,
    breaches,
    cpu_warning,
    thresholds,
)
from loadtest.summary import LOCUST_WINDOW, REQUESTS_WINDOW, render_markdown, summarize

# Two request kinds; Locust's aggregated entry started 2 s before the first request.
LOOKUPS = {
    "name": "get user by id",
    "method": "GET",
    "start_time": 1000.5,
    "last_request_timestamp": 1010.0,
    "num_requests": 100,
    "num_failures": 0,
    "total_response_time": 3000.0,
    "min_response_time": 1.24,
    "max_response_time": 1500.2,
    "total_content_length": 25000,
    "response_times": {"5": 60, "99": 20, "100": 10, "490": 4, "500": 3, "990": 1, "1000": 2},
}
INSERTS = {
    "name": "insert <batch>",  # markup in a name must come out escaped
    "method": "POST",
    "start_time": 1001.0,
    "last_request_timestamp": 1011.0,
    "num_requests": 20,
    "num_failures": 2,
    "total_response_time": 500.0,
    "min_response_time": 18.3,
    "max_response_time": 40.0,
    "total_content_length": 2000,
    "response_times": {"20": 18, "40": 2},
}
TOTAL_ENTRY = {
    "name": "Aggregated",
    "start_time": 998.5,
    "last_request_timestamp": 1011.0,
    "num_requests": 120,
    "num_failures": 2,
}
# What the locustfile saves beside them (locust_run.json): the last of 5 users started at
# 1004.0, when 40 lookups (30 at 5 ms, 10 at 99 ms) and no insert had been made.
FAILURE = 'status 503: {"detail": "<store> busy"}'
DETAILS = {
    "status_codes": {"get user by id": {"200": 100}, "insert <batch>": {"200": 18, "503": 2}},
    "errors": [{"method": "POST", "name": "insert <batch>", "message": FAILURE, "occurrences": 2}],
    "spawned": {
        "at": 1004.0,
        "users": 5,
        "entries": [
            {
                **LOOKUPS,
                "num_requests": 40,
                "total_response_time": 1140.0,
                "total_content_length": 10000,
                "response_times": {"5": 30, "99": 10},
            }
        ],
    },
}
HISTORY_HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%,"
    "Total Request Count,Total Failure Count,Total Median Response Time,"
    "Total Average Response Time,Total Min Response Time,Total Max Response Time,"
    "Total Average Content Size"
)


def history_row(t, users, method, name, rps, fps, p50, p90, p95, p99) -> str:
    """A row of locust_stats_history.csv (the columns the report reads; totals zero)."""
    percentiles = [p50] * 4 + [p90, p95, p95] + [p99] * 4
    return ",".join(
        map(str, [t, users, method, name, rps, fps, *percentiles, 0, 0, 0, 0.0, 0, 0, 0])
    )


def history() -> str:
    """12 s of history: users ramp up to 5 by 1004, lookups from 1001, inserts from 1002."""
    rows = [HISTORY_HEADER, "998,0,,Aggregated,0.0,0.0" + ",N/A" * 11 + ",0,0,0,0.0,0,0,0"]
    for t in range(999, 1011):
        users = min(max(t - 999, 0), 5)
        lookups = (8.0 + t % 3, 5, 99, 100 + 20 * (t % 4), 490 + 10 * (t % 5))
        inserts = (2.0, 20, 40, 40, 40)
        fps = 0.2 if t == 1006 else 0.0
        if t >= 1001:
            rows.append(
                history_row(t, users, "GET", "get user by id", lookups[0], 0.0, *lookups[1:])
            )
        if t >= 1002:
            rows.append(
                history_row(t, users, "POST", "insert <batch>", inserts[0], fps, *inserts[1:])
            )
        total = (lookups[0] + inserts[0], 5, 99, lookups[3], lookups[4]) if t >= 1001 else None
        if total:
            rows.append(history_row(t, users, "", "Aggregated", total[0], fps, *total[1:]))
    return "\n".join(rows) + "\n"


HISTORY = history()
RESOURCE = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|url\(|@import""", re.I)


def summary_of(
    *entries: dict, total: dict | None = TOTAL_ENTRY, details: dict | None = None
) -> dict:
    return summarize([dict(entry) for entry in entries], users=5, total=total, details=details)


def test_rps_and_duration_count_locusts_own_window():
    """Duration runs from Locust's aggregated start to the last request, and every kind's
    RPS is its requests over that window: ``StatsEntry.total_rps`` in locust.html."""
    summary = summary_of(LOOKUPS, INSERTS)
    seconds = TOTAL_ENTRY["last_request_timestamp"] - TOTAL_ENTRY["start_time"]
    assert summary["duration_s"] == 12.5
    assert summary["window"]["counted"] == LOCUST_WINDOW
    assert summary["total"]["rps"] == round(120 / seconds, 1) == 9.6
    assert summary["kinds"]["get user by id"]["rps"] == round(100 / seconds, 1) == 8.0
    assert summary["kinds"]["insert <batch>"]["rps"] == round(20 / seconds, 1) == 1.6
    assert LOCUST_WINDOW in render_markdown(summary)


def test_without_locusts_start_the_window_is_first_to_last_request():
    summary = summary_of(LOOKUPS, INSERTS, total=None)
    assert summary["duration_s"] == 10.5
    assert summary["window"]["counted"] == REQUESTS_WINDOW
    assert summary["total"]["rps"] == round(120 / 10.5, 1)


def test_percentiles_of_the_total_merge_every_kinds_histogram():
    """120 requests: 78 at 20 ms or less, so p50 is 5 ms; the slowest 6 are >= 500 ms."""
    total = summary_of(LOOKUPS, INSERTS)["total"]
    assert (total["p50_ms"], total["p95_ms"], total["p99_ms"]) == (20, 500, 1000)
    assert (total["requests"], total["failures"], total["max_ms"]) == (120, 2, 1500)


def test_latency_bands_count_requests_by_recorded_time():
    """< 100 ms, 100-499, 500-999, >= 1000: by Locust's rounded times, shares of all."""
    bands = latency_bands(LOOKUPS["response_times"])
    assert [band["count"] for band in bands] == [80, 14, 4, 2]
    assert [band["share"] for band in bands] == [80.0, 14.0, 4.0, 2.0]
    assert [band["label"] for band in bands] == [
        "< 100 ms",
        "100-499 ms",
        "500-999 ms",
        ">= 1000 ms",
    ]
    assert bands[-1]["x"] + bands[-1]["width"] == pytest.approx(360)


def test_a_missing_value_breaks_a_line_over_time():
    points = [(0, 1), (1, None), (2, 4), (4, 3)]
    chart = time_chart(
        [{"label": "v", "color": "#000", "points": points}], seconds=4, unit="ms", y_label="v"
    )
    assert [tick["label"] for tick in chart["y_ticks"]] == ["0", "1", "2", "3", "4"]
    first, second = (path.split() for path in chart["lines"][0]["paths"])
    assert len(set(first)) == 1 and len(first) == 2  # a lone point: drawn as a dot
    assert len(set(second)) == 2


def test_history_rows_per_kind_with_unknown_percentiles_as_none(tmp_path):
    (tmp_path / "history.csv").write_text(HISTORY)
    history = sections.read_history(tmp_path / "history.csv")
    assert set(history) == {"Aggregated", "get user by id", "insert <batch>"}
    assert history["Aggregated"][0] == {
        "t": 998, "users": 0, "rps": 0.0, "fps": 0.0, "p50": None, "p90": None, "p95": None,
        "p99": None,
    }  # fmt: skip
    assert history["insert <batch>"][4] == {
        "t": 1006, "users": 5, "rps": 2.0, "fps": 0.2, "p50": 20, "p90": 40, "p95": 40, "p99": 40
    }  # fmt: skip
    assert sections.read_history(tmp_path / "missing.csv") == {}


def test_thresholds_pass_at_their_limit_and_name_each_breach():
    total = {"failures": 0, "p95_ms": 200, "rps": 800.0}
    passed = thresholds(total, p95_ms=200, min_rps=800)
    assert [check["passed"] for check in passed] == [True, True, True]
    assert breaches(passed) == []
    failed = thresholds({"failures": 3, "p95_ms": 201, "rps": 799.9}, p95_ms=200, min_rps=800)
    assert breaches(failed) == [
        FAILURES_BREACHED.format(actual=3),
        P95_BREACHED.format(actual=201, limit="200"),
        MIN_RPS_BREACHED.format(actual=799.9, limit="800"),
    ]


def test_only_the_failures_threshold_is_always_set():
    checked = thresholds({"failures": 0, "p95_ms": 9999, "rps": 0.1}, p95_ms=None, min_rps=None)
    assert [check["name"] for check in checked] == ["failures"]


def test_locusts_cpu_warning_is_found_in_its_log(tmp_path):
    log = tmp_path / "locust.log"
    log.write_text(
        "[2026-01-01 10:00:00,000] vm/INFO/locust.main: Starting Locust 2.47.0\n"
        "[2026-01-01 10:00:10,000] vm/WARNING/root: CPU usage above 90%! This may constrain "
        "your throughput and may even give inconsistent response time measurements! See "
        "https://docs.locust.io/en/stable/running-distributed.html for how to distribute\n"
    )
    assert cpu_warning(log).startswith("[2026-01-01 10:00:10,000] vm/WARNING/root: CPU usage")
    log.write_text("[2026-01-01 10:00:00,000] vm/INFO/locust.main: Shutting down (exit code 0)\n")
    assert cpu_warning(log) is None
    assert cpu_warning(tmp_path / "missing.log") is None


def run_of(**changes) -> dict:
    """A summary's ``run`` facts (`report.run_facts`'s shape), with ``changes``."""
    swarm = {"users": 1000, "spawn_rate": 100, "run_time": "60s", "access": "tokens"}
    swarm |= {"tags": None, "processes": None}
    backends = [{"alias": alias, "vendor": "sqlite", "replica_of": ""} for alias in ALIASES]
    run = {"finished_at": "2026-01-02T03:04:05+00:00", "commit": "abc1234", "swarm": swarm}
    run |= {"server": {"name": "gunicorn", "proxy": "nginx"}, "backends": backends}
    for key, value in changes.items():
        for part in ("swarm", "server"):
            if key in run[part]:
                run[part][key] = value
        if key == "backends":
            run["backends"] = value
    return run


ALIASES = ("default", "users", "products", "orders")
KIND_FIGURES = {
    "get user by id": {"rps": 100.0, "p95_ms": 10, "failures": 0},
    "insert batch": {"rps": 10.0, "p95_ms": 50, "failures": 0},
}


def summary_with(users: int, total: dict, kinds: dict, **run) -> dict:
    return {"users": users, "total": total, "kinds": kinds, "run": run_of(users=users, **run)}


def test_comparison_with_the_previous_run_gives_ratios_and_verdicts(tmp_path, monkeypatch):
    """Totals and every kind: this, other, ratio, change and verdict; more requests/s is
    better, a higher p95 or more failures worse, and 5% either way is the same."""
    monkeypatch.setattr(compare, "ANCHORS", tmp_path / "no-bench")
    previous = summary_with(1000, {"rps": 10.0, "p95_ms": 400, "failures": 1}, KIND_FIGURES)
    (tmp_path / "summary.json").write_text(json.dumps(previous))
    kinds = {
        "get user by id": {"rps": 104.0, "p95_ms": 20, "failures": 0},
        "insert batch": {"rps": 5.0, "p95_ms": 40, "failures": 3},
        "get user by email": {"rps": 1.0, "p95_ms": 5, "failures": 0},  # new this run
    }
    this = summary_with(1000, {"rps": 12.5, "p95_ms": 100, "failures": 0}, kinds)
    [compared] = compare.comparisons(this, previous=report.previous_summary(tmp_path), tags=None)
    assert (
        compared["label"] == "previous run (2026-01-02T03:04:05+00:00, commit abc1234, 1000 users)"
    )
    assert compared["differences"] == []
    rows = [(r["name"], r["this"], r["other"], r["ratio"], r["change"], r["verdict"])
            for r in compared["rows"]]  # fmt: skip
    assert rows == [
        ("requests/s", 12.5, 10.0, 1.25, "+25%", "better"),
        ("p95 ms", 100, 400, 0.25, "-75%", "better"),
        ("failures", 0, 1, 0.0, "-1", "better"),
    ]
    verdicts = {k["name"]: [r["verdict"] for r in k["rows"]] for k in compared["kinds"]}
    assert verdicts == {
        "get user by email": [None, None, None],  # nothing to compare with
        "get user by id": ["same", "worse", "same"],  # +4%: the same
        "insert batch": ["worse", "better", "worse"],
    }
    assert report.previous_summary(tmp_path / "empty") is None
    assert compare.comparisons(this, previous=None, tags=None) == []


def test_a_comparison_of_different_tests_says_what_differs(tmp_path, monkeypatch):
    """Issue 31: a 200-user run beside a 1000-user one showed a 1.34 ratio and nothing else.
    Every setting that differs is named, in the page and in summary.md."""
    monkeypatch.setattr(compare, "ANCHORS", tmp_path / "no-bench")
    postgres = [
        {"alias": alias, "vendor": "sqlite" if alias == "default" else "postgresql"}
        for alias in ALIASES
    ]
    previous = summary_with(
        200, {"rps": 10.0, "p95_ms": 40, "failures": 0}, KIND_FIGURES,
        run_time="30s", access="open", name="granian", proxy="none", backends=postgres,
    )  # fmt: skip
    this = summary_with(1000, {"rps": 13.4, "p95_ms": 40, "failures": 0}, KIND_FIGURES)
    [compared] = compare.comparisons(this, previous=previous, tags=None)
    assert compared["differences"] == [
        {"name": "users", "this": "1000", "other": "200"},
        {"name": "run time", "this": "60s", "other": "30s"},
        {"name": "access", "this": "tokens", "other": "open"},
        {"name": "server", "this": "gunicorn", "other": "granian"},
        {"name": "proxy", "this": "nginx", "other": "none"},
        {
            "name": "databases",
            "this": "sqlite",
            "other": "postgresql (orders, products, users), sqlite (default)",
        },
    ]
    markdown = render_markdown(summary_of(LOOKUPS) | {"comparisons": [compared]})
    line = [line for line in markdown.splitlines() if line.startswith("Compared")]
    assert line == [
        "Compared with the previous run (2026-01-02T03:04:05+00:00, commit abc1234, 200 users): "
        "requests/s +34% (better), p95 ms +0% (same), failures 0 (same). **Not the same test**: "
        "users 1000 here, 200 there; run time 60s here, 30s there; access tokens here, open "
        "there; server gunicorn here, granian there; proxy nginx here, none there; databases "
        "sqlite here, postgresql (orders, products, users), sqlite (default) there."
    ]
    page = written_report(tmp_path / "reports", comparisons=[compared])
    assert "Not the same test" in page and "<b>1000</b> here, <b>200</b> there" in page
    assert re.search(r'<td class="n better">13.4 · 10.0 · \+34%</td>', page)
    assert '<td class="n same">100.0 · 100.0 · +0%</td>' in page  # a kind, unchanged


def test_a_pinned_baseline_is_compared_instead_of_the_previous_run(tmp_path, monkeypatch):
    """``--baseline FILE``: a run's summary.json, compared instead of the folder's previous
    run; a missing or foreign file stops the command before anything starts."""
    monkeypatch.setattr(compare, "ANCHORS", tmp_path / "no-bench")
    baseline = summary_with(1000, {"rps": 8.0, "p95_ms": 10, "failures": 0}, KIND_FIGURES)
    (tmp_path / "pinned.json").write_text(json.dumps(baseline))
    previous = summary_with(1000, {"rps": 9.0, "p95_ms": 10, "failures": 0}, KIND_FIGURES)
    this = summary_with(1000, {"rps": 10.0, "p95_ms": 10, "failures": 0}, KIND_FIGURES)
    pinned = compare.read_baseline(tmp_path / "pinned.json")
    [compared] = compare.comparisons(
        this, previous=previous, tags=None, baseline=pinned, baseline_path=tmp_path / "pinned.json"
    )
    assert compared["label"].startswith(f"baseline {tmp_path / 'pinned.json'} (2026-01-02")
    assert compared["rows"][0]["other"] == 8.0
    (tmp_path / "foreign.json").write_text("[]")
    for path, reason in (("missing.json", "No such file"), ("foreign.json", "no totals")):
        with pytest.raises(compare.BaselineError, match=reason):
            compare.read_baseline(tmp_path / path)
        with pytest.raises(CommandError, match=f"cannot read the baseline .*{path}"):
            call_command(
                "loadtest", "--baseline", str(tmp_path / path), "--reports", str(tmp_path / "r")
            )
    assert not (tmp_path / "r").exists()  # nothing ran


def test_the_anchor_is_compared_with_lookup_only_runs(tmp_path, monkeypatch):
    """bench/swarm.py's newest anchor run: beside a ``--tags user_id`` run only, without
    the settings (it is another server)."""
    monkeypatch.setattr(compare, "ANCHORS", tmp_path)
    (tmp_path / "anchor-1").mkdir()
    (tmp_path / "anchor-1" / "locust.json").write_text(json.dumps([LOOKUPS]))
    this = summary_with(1000, {"rps": 19.0, "p95_ms": 490, "failures": 0}, {})
    assert compare.comparisons(this, previous=None, tags=None) == []
    [anchor] = compare.comparisons(this, previous=None, tags=["user_id"])
    assert "anchor" in anchor["label"] and "anchor-1" in anchor["label"]
    assert anchor["rows"][0]["other"] == round(100 / 9.5, 1) == 10.5
    assert anchor["rows"][0]["ratio"] == round(19.0 / 10.5, 2) == 1.81
    assert anchor["differences"] == []


def test_data_origin_says_who_generated_the_rows():
    stored = {"users": 3, "products": 1, "orders": 6}
    generated = {"seconds": 1.5, "rows": 10, "stored": stored, "finished_at": "2026-01-02T03:04:05"}
    assert report.generation(generated, generated, stored)["text"] == (
        "generated by this run: 10 rows in 1.5 s"
    )
    earlier = "not generated by this run; loaded earlier in 1.5 s (2026-01-02 03:04 UTC)"
    assert report.generation(None, generated, stored)["text"] == earlier
    swarmed = {**stored, "users": 4, "orders": 8}  # a swarm's inserts since
    assert report.generation(None, generated, swarmed)["text"] == earlier
    other_rows = {**stored, "orders": 5}  # fewer than recorded: regenerated since
    assert report.generation(None, generated, other_rows)["text"] == "not generated by this run"
    assert report.generation(None, None, stored)["text"] == "not generated by this run"


def test_gunicorn_shape_is_what_gunicorn_conf_computes_under_the_servers_environment():
    shape = runinfo.gunicorn_shape({"WEB_CONCURRENCY": "3", "GUNICORN_THREADS": "2"})
    assert shape == {"worker_class": "gthread", "workers": 3, "threads": 2}


def test_commit_is_unknown_outside_git(tmp_path):
    assert runinfo.git_commit(tmp_path) == "unknown"
    assert re.fullmatch(r"[0-9a-f]{7,}(-dirty)?", runinfo.git_commit())


def written_report(reports: Path, **extra) -> str:
    reports.mkdir(exist_ok=True)
    (reports / "locust.json").write_text(json.dumps([LOOKUPS, INSERTS]))
    (reports / "locust_stats_history.csv").write_text(HISTORY)
    summary = summary_of(LOOKUPS, INSERTS, details=DETAILS)
    summary["thresholds"] = thresholds(summary["total"], p95_ms=100, min_rps=None)
    summary["breaches"] = breaches(summary["thresholds"])
    summary.update(extra)
    return report.write_report(summary, reports).read_text()


def test_the_page_shows_the_headline_thresholds_and_every_kind(tmp_path):
    page = written_report(tmp_path / "reports")
    assert "FAILED" in page and "9.6</b>requests/s" in page and "500 ms</b>p95" in page
    assert P95_BREACHED.format(actual=500, limit="100") in page
    assert "get user by id" in page and "insert &lt;batch&gt;" in page
    assert "insert <batch>" not in page
    assert page.count("<polyline") >= 6  # percentiles and RPS of two kinds and of all
    assert LOCUST_WINDOW.replace("'", "&#x27;") in page


def test_the_page_warns_when_locust_ran_out_of_cpu(tmp_path):
    page = written_report(tmp_path / "reports", cpu_warning="WARNING/root: CPU usage above 90%!")
    assert "Locust ran out of CPU" in page and "the load generator's limit" in page
    assert "Locust ran out of CPU" not in written_report(tmp_path / "calm")


def test_the_page_is_self_contained(tmp_path):
    """No script, stylesheet link, font or image from anywhere: it opens offline."""
    page = written_report(tmp_path / "reports")
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not RESOURCE.search(page), RESOURCE.search(page)
    assert "<style>" in page and "<svg" in page


def test_granian_shape_is_what_granian_server_computes_under_the_servers_environment():
    shape = runinfo.server_shape("granian", {"WEB_CONCURRENCY": "3", "GUNICORN_THREADS": "2"})
    assert shape == {"worker_class": "wsgi", "workers": 3, "threads": 2, "backpressure": 1000}


def test_every_figure_of_locusts_table_and_the_status_codes_per_kind(tmp_path):
    """Issue 31: the table lacked Locust's average, minimum, response size, p90, p99.9 and
    the status codes. Each kind and the total have them all, in the page too."""
    summary = summary_of(LOOKUPS, INSERTS, details=DETAILS)
    keys = ("requests", "failures", "failure_pct", "rps", "avg_ms", "min_ms", "p50_ms")
    keys += ("p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "avg_bytes")
    figures = {name: [summary["kinds"][name][key] for key in keys] for name in summary["kinds"]}
    assert figures == {
        "get user by id": [100, 0, 0.0, 8.0, 30.0, 1.2, 5, 490, 500, 1000, 1000, 1500, 250],
        "insert <batch>": [20, 2, 10.0, 1.6, 25.0, 18.3, 20, 40, 40, 40, 40, 40, 100],
    }
    assert [summary["total"][key] for key in keys] == [
        120, 2, 1.67, 9.6, 29.2, 1.2, 20, 100, 500, 1000, 1000, 1500, 225
    ]  # fmt: skip
    codes = {name: kind["status_codes"] for name, kind in summary["kinds"].items()}
    assert codes == {"get user by id": {"200": 100}, "insert <batch>": {"200": 18, "503": 2}}
    assert summary["total"]["status_codes"] == {"200": 118, "503": 2}
    page = written_report(tmp_path / "reports")
    kinds = page[page.index('<section id="kinds">') : page.index('<section id="steady">')]
    for header in ("avg", "min", "median", "p90", "p99.9", "max", "avg size"):
        assert f'<th class="n">{header}</th>' in kinds
    assert "response times in ms, sizes in bytes" in kinds
    assert '<span class="code">200: 118</span><span class="code bad">503: 2</span>' in kinds
    assert '<td class="n">2 (10.0%)</td>' in kinds
    assert (
        "| get user by id | 100 | 0 | 8.0 | 30.0 | 1.2 | 5 | 490 | 500 | 1000 | 1000 | 1500 | 250 |"
        in (render_markdown(summary))
    )


def test_the_steady_state_leaves_the_ramp_up_out(tmp_path):
    """Issue 31: the ramp-up was mixed into the percentiles. The figures after the last user
    started are reported apart: the run less the locustfile's snapshot at that moment."""
    steady = summary_of(LOOKUPS, INSERTS, details=DETAILS)["steady"]
    assert (steady["start_s"], steady["seconds"], steady["users"]) == (5.5, 7.0, 5)
    lookups = steady["kinds"]["get user by id"]
    assert (lookups["requests"], lookups["rps"], lookups["avg_ms"]) == (60, 8.6, 31.0)
    assert (lookups["p50_ms"], lookups["p95_ms"], lookups["min_ms"]) == (99, 990, None)
    assert steady["kinds"]["insert <batch>"]["requests"] == 20  # none before: all after
    assert (steady["total"]["requests"], steady["total"]["rps"]) == (80, 11.4)
    assert summary_of(LOOKUPS, INSERTS)["steady"] is None  # not recorded
    late = {**DETAILS, "spawned": {**DETAILS["spawned"], "at": 1011.0}}
    assert summary_of(LOOKUPS, INSERTS, details=late)["steady"] is None  # ended in ramp-up
    page = written_report(tmp_path / "reports")
    assert "11.4</b>requests/s after the ramp-up" in page and "990 ms</b>p95 after it" not in page
    assert "After the ramp-up (5 users from 5.5 s, 7.0 s): 11.4 requests/s" in render_markdown(
        summary_of(LOOKUPS, INSERTS, details=DETAILS)
    )


def test_failure_messages_are_in_the_page(tmp_path):
    page = written_report(tmp_path / "reports")
    failures = page[
        page.index('<section id="failures">') : page.index('<section id="distribution">')
    ]
    assert "status 503: {&quot;detail&quot;: &quot;&lt;store&gt; busy&quot;}" in failures
    assert '<td class="n">2</td><td class="n">10.0%</td>' in failures
    markdown = render_markdown(summary_of(LOOKUPS, INSERTS, details=DETAILS))
    assert f"- 2 × POST insert <batch>: {FAILURE}" in markdown


def test_a_chart_over_time_has_labelled_axes_gridlines_time_ticks_users_and_the_ramp_up():
    """Issue 31: charts labelled only 0 and the maximum. Now: round values and m:ss ticks
    with gridlines, unit-labelled axes, users on the right, the ramp-up shaded, a tooltip
    per sample."""
    points = [(t, 100 + t * 3) for t in range(0, 121, 10)] + [(125, None)]
    users = [(t, min(100 * t, 1000)) for t in range(0, 126, 5)]
    chart = time_chart(
        [{"label": "p95", "color": "#000", "points": points}],
        seconds=125, unit="ms", y_label="response time", users=users, ramp_up_s=10,
    )  # fmt: skip
    assert [tick["label"] for tick in chart["x_ticks"]] == [
        "0:00", "0:15", "0:30", "0:45", "1:00", "1:15", "1:30", "1:45", "2:00"
    ]  # fmt: skip
    assert [tick["label"] for tick in chart["y_ticks"]] == ["0", "100", "200", "300", "400", "500"]
    assert [tick["label"] for tick in chart["users_ticks"]] == [
        "0", "200", "400", "600", "800", "1,000"
    ]  # fmt: skip
    assert (chart["x_label"], chart["y_label"]) == (
        "time since the start (m:ss)",
        "response time (ms)",
    )
    assert chart["y_ticks"][-1]["y"] == chart["top"] and chart["y_ticks"][0]["y"] == chart["bottom"]
    assert chart["ramp"] == {"x": chart["left"], "width": round(chart["plot_width"] * 10 / 125, 1)}
    assert chart["users_line"]["paths"]
    titles = {column["title"] for column in chart["hover"]}
    assert "0:10: p95 130 ms, 1,000 users" in titles and "2:05: p95 -, 1,000 users" in titles


def test_over_time_is_three_charts_with_one_p95_line_per_kind(tmp_path):
    """Issue 31: seven near-identical panels (percentiles and RPS per kind). Now three:
    the percentiles of all requests, throughput with failures, and p95 overlaid by kind."""
    page = written_report(tmp_path / "reports")
    over_time = page[page.index('<section id="over-time">') : page.index('<section id="kinds">')]
    assert over_time.count('<figure class="chart">') == 3
    assert over_time.count("time since the start (m:ss)") == 3
    assert over_time.count('<rect class="ramp"') == 3
    assert over_time.count('class="users"') == 2 and over_time.count(">active users</text>") == 2
    by_kind = over_time[over_time.index("p95 by request kind") :]
    assert [title for title in re.findall(r"<polyline [^>]*><title>([^<]*)</title>", by_kind)] == [
        "get user by id",
        "insert &lt;batch&gt;",
    ]
    assert "<title>0:05: p50 5 ms, p95 100 ms, p99 530 ms, 5 users</title>" in over_time
