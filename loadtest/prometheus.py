"""A real Prometheus for the length of a run: it scrapes every server instance's ``/metrics``.

`scraping` starts Debian's ``prometheus`` binary (``make prometheus`` installs it) with a
configuration generated for the run (`scrape_config`: each server instance scraped
directly, not through nginx, every second, with ``Authorization: Token`` read from a file
when the servers require tokens), its data in ``<folder>/prometheus/data`` and its own
address on a free loopback port, and stops it gracefully (SIGTERM: it closes its head
block and WAL) when the block ends, however it ends. When the binary is missing or does
not become ready, the run goes on without it and `Scraper.reason` says why, in one
sentence. `scraped_once` waits for its first scrape of the servers once they answer.

`collect` asks its HTTP API, after the swarm, for the series the report draws
(`RANGE_QUERIES`, ``query_range`` at a one-second step over the swarm) and for the
figures over the steady state (`WINDOW_QUERIES`, instant queries over that window) and
since the servers started (`RUN_QUERIES`), and
`write` saves them as ``server-metrics.json``. Every request query leaves out the scrapes
of ``/metrics`` themselves (route ``metrics``).
"""

import json
import math
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loadtest.processes import stop_gracefully

BINARY = "prometheus"
FOLDER = "prometheus"  # in the run's folder: the config, the log and data/
SERVER_METRICS = "server-metrics.json"
SCRAPE_INTERVAL_S = 1
READY_TIMEOUT_S = 20
JOB = "data_project"
NO_SERVER_SIDE = ", so this run has no server-side metrics."
# A request is every route but the scrapes of /metrics themselves.
REQUESTS = 'dp_http_request_duration_seconds_{part}{{route!="metrics"}}'
BUCKETS, COUNT, SUM = (REQUESTS.format(part=part) for part in ("bucket", "count", "sum"))


def _quantile(q: float, by: str, over: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}) (rate({BUCKETS}[{over}])))"


# Over time (query_range, a step of SCRAPE_INTERVAL_S): the contract's "Useful PromQL".
RATE = "5s"
RANGE_QUERIES = {
    "p50_by_route": _quantile(0.5, "le, route, key", RATE),
    "p95_by_route": _quantile(0.95, "le, route, key", RATE),
    "p99_by_route": _quantile(0.99, "le, route, key", RATE),
    "requests_by_status": f"sum by (status) (rate({COUNT}[{RATE}]))",
    "cpu_by_process": f"rate(process_cpu_seconds_total[{RATE}])",
    "rss_by_process": "process_resident_memory_bytes",
    "db_time_share": f"sum(rate(dp_db_query_seconds_sum[{RATE}])) / sum(rate({SUM}[{RATE}]))",
    "queries_by_alias": f"sum by (alias) (rate(dp_db_query_seconds_count[{RATE}]))",
    "breaker_trips": f"sum by (store, access) (increase(dp_breaker_trips_total[{RATE}]))",
    "breaker_open": "max by (store, access) (dp_breaker_open)",
    "insert_queue_depth": "sum by (store) (dp_insert_queue_depth)",
    "connections_open": "sum by (alias) (dp_db_connections_open)",
    "replica_lag": "max by (replica) (dp_replica_lag_seconds)",
    "up": "up",
}
# Over a window: instant queries at its end, WINDOW its length ("42s"). A quantile of the
# window's rate is the quantile of its increase: the same counts, scaled.
WINDOW = "$window"
WINDOW_QUERIES = {
    "p50": _quantile(0.5, "le", WINDOW),
    "p95": _quantile(0.95, "le", WINDOW),
    "p99": _quantile(0.99, "le", WINDOW),
    "p95_by_route": _quantile(0.95, "le, route, key", WINDOW),
    "requests_by_status": f"sum by (status) (increase({COUNT}[{WINDOW}]))",
    "mean_seconds": f"sum(increase({SUM}[{WINDOW}])) / sum(increase({COUNT}[{WINDOW}]))",
    "db_time_share": f"sum(increase(dp_db_query_seconds_sum[{WINDOW}])) "
    f"/ sum(increase({SUM}[{WINDOW}]))",
    "queries_by_alias": f"sum by (alias) (increase(dp_db_query_seconds_count[{WINDOW}]))",
    "breaker_trips": f"sum by (store, access) (increase(dp_breaker_trips_total[{WINDOW}]))",
    "cpu_by_process": f"rate(process_cpu_seconds_total[{WINDOW}])",
}
# Since the servers started (the run starts them afresh, so their counters start at 0):
# each counter's last value, at the end. increase() would miss the requests a series
# counted before its first scrape (a series appears with its first request).
RUN_QUERIES = {
    "requests_by_status": f"sum by (status) (last_over_time({COUNT}[{WINDOW}]))",
    "queries_by_alias": f"sum by (alias) (last_over_time(dp_db_query_seconds_count[{WINDOW}]))",
    "breaker_trips": f"sum by (store, access) (last_over_time(dp_breaker_trips_total[{WINDOW}]))",
    "records_by_outcome": "sum by (store, outcome) "
    f"(last_over_time(dp_insert_records_total[{WINDOW}]))",
    "batches_by_status": f"sum by (status) (last_over_time(dp_insert_batches_total[{WINDOW}]))",
    "throttled_by_scope": f"sum by (scope) (last_over_time(dp_throttled_requests_total[{WINDOW}]))",
    "idempotent_replays": f"sum(last_over_time(dp_idempotent_replays_total[{WINDOW}]))",
}


def over(promql: str, seconds: int) -> str:
    """A `WINDOW_QUERIES` query over the last ``seconds`` seconds."""
    return promql.replace(WINDOW, f"{seconds}s")


class PrometheusError(RuntimeError):
    """Prometheus's API did not answer, or answered with an error."""


@dataclass
class Scraper:
    """A Prometheus this run started (``url``: its API's base), or the reason there is
    none (``reason``: one sentence; ``url`` is then None)."""

    folder: Path
    url: str | None = None
    reason: str | None = None
    targets: list[str] = field(default_factory=list)
    version: str | None = None
    first_errors: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.url is not None


def binary() -> str | None:
    """The ``prometheus`` executable on PATH, or None."""
    return shutil.which(BINARY)


def version(path: str) -> str | None:
    """``2.42.0+ds``, as ``prometheus --version`` says it; None when it cannot say."""
    try:
        run = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = (run.stdout or run.stderr).split()
    return words[2] if len(words) > 2 and words[1] == "version" else None


def scrape_config(targets: list[str], *, credentials_file: str | None = None) -> dict:
    """The configuration of a Prometheus that scrapes ``/metrics`` on each of ``targets``
    (``host:port``, the servers themselves) every `SCRAPE_INTERVAL_S` seconds, sending
    ``Authorization: Token <the file's content>`` when ``credentials_file`` is given."""
    interval = f"{SCRAPE_INTERVAL_S}s"
    job = {
        "job_name": JOB,
        "metrics_path": "/metrics",
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "static_configs": [{"targets": list(targets)}],
    }
    if credentials_file:
        job["authorization"] = {"type": "Token", "credentials_file": credentials_file}
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [job],
    }


@contextmanager
def scraping(
    folder: Path, targets: list[str], *, token: str | None = None, port: int
) -> Iterator[Scraper]:
    """Prometheus scraping ``targets`` for the block, listening on ``127.0.0.1:port``,
    writing its config, log and data under ``folder/prometheus``; ``token``: the key sent
    in ``Authorization: Token`` (kept in a temporary file, never in ``folder``). Yields a
    `Scraper`, running or with the reason it is not; never raises for a Prometheus that is
    missing or fails to start."""
    home = Path(folder) / FOLDER
    scraper = Scraper(folder=home, targets=list(targets))
    path = binary()
    if path is None:
        scraper.reason = (
            "Prometheus is not installed (no prometheus on PATH; make prometheus installs "
            "Debian's package), so this run has no server-side metrics."
        )
        yield scraper
        return
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prometheus-") as secrets:
        credentials = None
        if token:
            credentials = Path(secrets) / "token"
            credentials.write_text(token)
            credentials.chmod(0o600)
        config = scrape_config(targets, credentials_file=credentials and str(credentials))
        (home / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        address = f"127.0.0.1:{port}"
        command = [
            path,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address={address}",
            "--log.level=warn",
        ]
        with (home / "prometheus.log").open("w") as log:
            # Its own session, as the servers': Ctrl-C reaches it through this process.
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                problem = _wait_ready(f"http://{address}", process, home / "prometheus.log")
                if problem:
                    scraper.reason = f"Prometheus did not start ({problem}){NO_SERVER_SIDE}"
                else:
                    scraper.url = f"http://{address}"
                    scraper.version = version(path)
                    scraper.process = process
                yield scraper
            finally:
                stop_gracefully(process, signal.SIGTERM, timeout=20)


def _wait_ready(url: str, process: subprocess.Popen, log: Path) -> str | None:
    """None once ``url/-/ready`` answers 200; else what went wrong, in a few words."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"it exited with status {process.returncode}: {_last_line(log)}"
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return None
        except OSError:
            pass
        time.sleep(0.2)
    return f"not ready after {READY_TIMEOUT_S} s"


def scraped_once(scraper: Scraper) -> None:
    """Return once Prometheus has scraped every target anew (it applies a configuration's
    targets a few seconds after it starts: started before the servers, it is ready when
    they are), so that the swarm's first second is recorded; keeps the errors of that
    scrape (none when it succeeded) in ``scraper.first_errors``. Does nothing for a
    scraper that is not running; gives up after `READY_TIMEOUT_S` seconds."""
    if not scraper.running:
        return
    before = None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and scraper.process.poll() is None:
        try:
            targets = api(scraper.url, "targets")["activeTargets"]
        except (PrometheusError, KeyError):
            targets = []
        if before is None:
            before = {target["scrapeUrl"]: target["lastScrape"] for target in targets}
        elif targets and all(
            target["health"] != "unknown"
            and target["lastScrape"] != before.get(target["scrapeUrl"])
            for target in targets
        ):
            scraper.first_errors = sorted(
                {target["lastError"] for target in targets if target["lastError"]}
            )
            return
        time.sleep(0.2)


def _last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1][:200] if lines else "no output"


def api(url: str, path: str, **params) -> dict:
    """``data`` of Prometheus's answer to ``GET url/api/v1/<path>?params``; raises
    `PrometheusError` when it does not answer or reports an error."""
    query = urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(f"{url}/api/v1/{path}?{query}", timeout=30) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read() or b"{}")
    except (OSError, ValueError) as exc:
        raise PrometheusError(f"{url}: {exc}") from exc
    if answer.get("status") != "success":
        raise PrometheusError(f"{params.get('query')}: {answer.get('error', answer)}")
    return answer["data"]


def _value(text: str) -> float | None:
    value = float(text)
    return None if math.isnan(value) or math.isinf(value) else value


def query_range(url: str, query: str, *, start: float, end: float, step: float = 1) -> list[dict]:
    """``[{"labels": {...}, "values": [[t, value or None]]}]``: ``query`` from ``start``
    to ``end`` (Unix seconds) every ``step`` seconds; NaN (no request in a quantile's
    window, 0/0) is None."""
    data = api(url, "query_range", query=query, start=start, end=end, step=step)
    return [
        {"labels": series["metric"], "values": [[t, _value(v)] for t, v in series["values"]]}
        for series in data["result"]
    ]


def query(url: str, promql: str, *, at: float) -> list[dict]:
    """``[{"labels": {...}, "value": value or None}]``: ``promql`` at ``at`` (Unix seconds)."""
    data = api(url, "query", query=promql, time=at)
    return [
        {"labels": series["metric"], "value": _value(series["value"][1])}
        for series in data["result"]
    ]


def collect(scraper: Scraper, *, start: float, end: float, steady_start: float | None) -> dict:
    """What `write` saves: the scraper's state, `RANGE_QUERIES` from ``start`` to ``end``,
    `WINDOW_QUERIES` over the steady state (from ``steady_start``; the whole span when
    None) and `RUN_QUERIES` from ``start`` to now, all in Unix seconds. A Prometheus that
    stops answering leaves ``reason`` set and what it answered before."""
    collected = {
        "available": False,
        "reason": scraper.reason,
        "prometheus": {
            "version": scraper.version,
            "targets": scraper.targets,
            "scrape_interval_s": SCRAPE_INTERVAL_S,
            "data": f"{FOLDER}/data",
        },
        "start": start,
        "end": end,
        "step_s": SCRAPE_INTERVAL_S,
        "ranges": {},
        "window": None,
        "run": None,
    }
    if not scraper.running:
        return collected
    start, end = math.floor(start), math.ceil(end)
    window_start = max(steady_start or start, start)
    seconds = max(round(end - window_start), 1)
    try:
        for name, promql in RANGE_QUERIES.items():
            collected["ranges"][name] = {
                "query": promql,
                "series": query_range(scraper.url, promql, start=start, end=end),
            }
        collected["window"] = {"start": end - seconds, "end": end, "seconds": seconds}
        collected["window"]["results"] = {
            name: query(scraper.url, over(promql, seconds), at=end)
            for name, promql in WINDOW_QUERIES.items()
        }
        now = math.ceil(time.time())  # after the last scrape: the servers have stopped
        span = max(now - start, 1)
        collected["run"] = {"start": start, "end": now, "seconds": span}
        collected["run"]["results"] = {
            name: query(scraper.url, over(promql, span), at=now)
            for name, promql in RUN_QUERIES.items()
        }
    except PrometheusError as exc:
        collected["reason"] = f"Prometheus stopped answering its API ({exc})."
        return collected
    if not any(series["values"] for series in collected["ranges"]["requests_by_status"]["series"]):
        collected["reason"] = _why_nothing(collected["ranges"]["up"]["series"], scraper)
        return collected
    collected["available"] = True
    return collected


def _why_nothing(up: list[dict], scraper: Scraper) -> str:
    """Why Prometheus recorded no request: the scrapes failed (``/metrics`` missing,
    refused the token, or the servers down: the targets' last error says which), or the
    servers counted none."""
    if not any(value for series in up for _, value in series["values"]):
        errors = scraper.first_errors  # while the servers ran: they may be stopped now
        if not errors:
            try:
                targets = api(scraper.url, "targets")["activeTargets"]
                errors = sorted({target["lastError"] for target in targets if target["lastError"]})
            except (PrometheusError, KeyError):
                errors = []
        said = f": {'; '.join(errors)}" if errors else ""
        return (
            f"Prometheus could not scrape /metrics on {', '.join(scraper.targets)} "
            f"(every scrape failed{said}){NO_SERVER_SIDE}"
        )
    return f"Prometheus scraped the servers but they counted no request{NO_SERVER_SIDE}"


def write(collected: dict, folder: Path) -> Path:
    """Save ``collected`` (`collect`) as ``server-metrics.json`` in ``folder``."""
    path = Path(folder) / SERVER_METRICS
    path.write_text(json.dumps(collected, indent=1) + "\n")
    return path


def read(folder: Path) -> dict | None:
    """``server-metrics.json`` of a run, or None when it has none."""
    path = Path(folder) / SERVER_METRICS
    return json.loads(path.read_text()) if path.exists() else None
