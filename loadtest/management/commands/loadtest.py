"""``manage.py loadtest``: the main job, from an empty checkout to a report.

Migrates every database, generates the million rows if the users table is empty (timed,
and recorded in ``DATA_DIR`` for later runs' reports), creates the swarm's API token
(client ``swarm``: ``read`` and ``write`` scopes, ``benchmark`` tier), starts the server
(``--server``: Gunicorn, the default, or Granian) as production runs it (`production_env`:
tokens required, the production throttles and switches) with a run id of its own, waits
for ``/api/health/`` to answer with that id (else another server holds the address), has
a Prometheus of its own scrape each server's ``/metrics`` (`loadtest.prometheus`, with a
token of client ``prometheus``, scope ``metrics``, under production settings) and psutil
sample the other processes (`loadtest.sampler`), runs the headless Locust swarm, stops the
server (also on Ctrl-C or failure), asks Prometheus for the swarm's seconds and stops it,
and writes ``reports/``: ``index.html``, the one page to open (`loadtest.report`),
Locust's HTML report, CSVs and log, ``summary.json`` and ``summary.md``,
``server-metrics.json``, ``processes.json`` and Prometheus's ``prometheus/`` folder, all of
them only once the run completes (`loadtest.staging`). Exits 1 when a threshold is
breached (any failed request; p95 above ``--p95-ms``; RPS below ``--min-rps``), Locust
failed or a server died, naming each; 130 on Ctrl-C (or SIGTERM), in one line, with every
process it started stopped and ``reports/`` as it was.
"""

import io
import os
import secrets
import signal
import time
from contextlib import ExitStack
from pathlib import Path

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from api.metrics.batching import FLUSH_INTERVAL_SECONDS
from api.services.selectors import row_counts
from data_project.run_id import RUN_ID_VARIABLE
from loadtest import compare, prometheus, report, runinfo, runner, sampler, server_side, staging
from loadtest.checks import breaches, cpu_warning, thresholds
from loadtest.proxy import ProxyError
from loadtest.summary import (
    TOTAL,
    read_details,
    read_stats,
    read_total,
    render_markdown,
    summarize,
    write_summary,
)

SERVER_DIED = "a server died during the swarm"
NOT_STARTED = "This run did not start the server, so it did not scrape it: no server-side metrics."


def swarm_token() -> str:
    """A new key for client ``swarm`` with its scopes and tier (its previous key revoked:
    only digests are stored, so an existing key cannot be shown again)."""
    out = io.StringIO()
    call_command("create_token", "swarm", scopes=["read", "write"], tier="benchmark", stdout=out)
    return out.getvalue().strip()


def metrics_token() -> str | None:
    """A new key for client ``prometheus`` with scope ``metrics`` (``/metrics`` in
    production), or None when this checkout's ``create_token`` has no such scope."""
    out = io.StringIO()
    try:
        call_command("create_token", "prometheus", scopes=["metrics"], stdout=out)
    except (CommandError, KeyError):
        return None
    return out.getvalue().strip()


def production_env(*, proxied: bool) -> dict[str, str]:
    """The environment of a production server on this machine: ``DJANGO_ENV=production``
    (tokens required, production throttles, docs, /run/ and synthetic inserts off) with a
    fresh secret key, and plain HTTP, as behind a TLS-terminating proxy on one host."""
    return {
        "DJANGO_ENV": "production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "NUM_PROXIES": "1" if proxied else "0",
    }


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Serve with Gunicorn or Granian, swarm with Locust, write reports/ (the main job)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--users", type=int, default=1000)
        parser.add_argument("--spawn-rate", type=float, default=100)
        parser.add_argument("--run-time", default="60s", help="Locust duration, e.g. 60s, 2m")
        parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate if empty")
        parser.add_argument("--bind", default="127.0.0.1:8000", help="address to serve on")
        parser.add_argument(
            "--server",
            choices=sorted(runner.SERVERS),
            default=runner.GUNICORN,
            help="the WSGI server: gunicorn (gunicorn.conf.py) or granian "
            "(data_project/granian_server.py); both read the same environment",
        )
        parser.add_argument(
            "--server-url", help="swarm this running server instead of starting one"
        )
        parser.add_argument(
            "--token", help="the API token the swarm sends (default: create_token swarm)"
        )
        parser.add_argument(
            "--access",
            choices=["tokens", "open"],
            default="tokens",
            help="tokens: served as production, the swarm sends a token and Idempotency-Keys; "
            "open: served as development, neither",
        )
        parser.add_argument("--tags", nargs="*", help="Locust tags, e.g. user_id (lookups only)")
        parser.add_argument("--processes", type=int, help="Locust worker processes (-1: per core)")
        parser.add_argument("--reports", default="reports", help="folder for the reports")
        parser.add_argument(
            "--proxy",
            action="store_true",
            help="serve through nginx (deploy/nginx.conf) on --bind, the server behind it",
        )
        parser.add_argument(
            "--instances",
            type=int,
            default=1,
            help="server instances behind nginx (the cluster run; implies --proxy), "
            "sharing WEB_CONCURRENCY between them",
        )
        parser.add_argument(
            "--p95-ms", type=float, help="fail when the p95 response time is above N ms"
        )
        parser.add_argument("--min-rps", type=float, help="fail when requests/s is below N")
        parser.add_argument(
            "--progress-every",
            type=float,
            default=5,
            help="seconds between the swarm's progress lines (0: none)",
        )
        parser.add_argument(
            "--baseline",
            type=Path,
            help="compare with this summary.json (a pinned run) instead of the previous run",
        )

    def handle(self, *args, **options) -> None:
        reports = Path(options["reports"])
        previous = report.previous_summary(reports)  # before this run replaces it
        if options["baseline"]:
            try:  # before anything starts, as a taken port is
                options["baseline_summary"] = compare.read_baseline(options["baseline"])
            except compare.BaselineError as exc:
                raise CommandError(str(exc)) from exc
        if not options["server_url"]:
            try:  # before anything starts: never swarm whatever already answers there
                runner.require_free(options["bind"])
            except runner.PortInUse as exc:
                raise CommandError(str(exc)) from exc
        # SIGTERM (a CI's timeout, kill) stops the run as Ctrl-C does: its servers and
        # Locust run in sessions of their own, and would outlive this process otherwise.
        terminate = signal.signal(signal.SIGTERM, _interrupt)
        try:
            with staging.staged_run(reports) as staged:
                summary = self._run(staged, options, previous)
                staging.publish(staged, reports)
        except KeyboardInterrupt:
            message = staging.interrupted(reports, previous)
            raise CommandError(message, returncode=130) from None
        except (runner.ServerError, ProxyError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            signal.signal(signal.SIGTERM, terminate)
        index = (reports / "index.html").resolve()
        self.stdout.write(render_markdown(summary))
        self.stdout.write(f"Report: {index}\n        {index.as_uri()}")
        self.stdout.write("Browse the loaded data: make serve")
        if summary["breaches"]:
            raise CommandError("; ".join(summary["breaches"]))

    def _run(self, staged: Path, options: dict, previous: dict | None) -> dict:
        """Serve (unless ``--server-url``), swarm, and write the run's files into ``staged``;
        returns the summary. Says each phase in one line (`phase`)."""
        with ExitStack() as observing:
            return self._observed_run(staged, options, previous, observing)

    def _observed_run(
        self, staged: Path, options: dict, previous: dict | None, observing: ExitStack
    ) -> dict:
        """`_run`'s work; Prometheus and the process sampler, entered on ``observing``,
        outlive the servers until the report has asked them."""
        problems, generated, server_env, topology = [], None, None, None
        if options["server_url"]:
            url = options["server_url"].rstrip("/")
            runner.wait_healthy(url)
            self.phase("check", f"{url} is healthy (a server this run did not start)")
            stored = report.stored_rows()
            scraper = prometheus.Scraper(folder=staged / prometheus.FOLDER, reason=NOT_STARTED)
            sampling = observing.enter_context(sampler.Sampler())
            status = self._swarm(url, staged, options)
            sampling.stop()
        else:
            generated = self._prepare(options["rows"], options["verbosity"])
            stored = generated["stored"] if generated else report.stored_rows()
            url = f"http://{options['bind']}"
            run_id = runner.new_run_id()
            # The servers send it back on every answer, checked before the swarm starts;
            # their INFO lines (boot, workers) would drown the run's own.
            env = {
                RUN_ID_VARIABLE: run_id,
                "GUNICORN_LOG_LEVEL": os.environ.get("GUNICORN_LOG_LEVEL") or "warning",
            }
            cluster = options["instances"] > 1
            if options["access"] == "tokens":
                options["token"] = options["token"] or swarm_token()
                env |= production_env(proxied=options["proxy"] or cluster)
            server = options["server"]
            upstreams = [
                f"127.0.0.1:{runner.free_port()}"
                for _ in range(options["instances"] if cluster or options["proxy"] else 0)
            ]
            topology = runner.topology(options["bind"], server, upstreams)
            if cluster:
                server_env = runner.behind_proxy_env(runner.cluster_env(env, options["instances"]))
                serving = runner.serve_cluster(
                    options["bind"], options["instances"], env=env, server=server,
                    upstreams=upstreams,
                )  # fmt: skip
            else:
                server_env = runner.behind_proxy_env(env) if options["proxy"] else env
                serving = runner.serve(
                    options["bind"], env=env, proxy=options["proxy"], server=server,
                    upstream=upstreams[0] if upstreams else None,
                )  # fmt: skip
            shape = runinfo.server_shape(server, server_env)
            self.phase(
                "serve",
                f"{topology} ({shape['workers']} worker{'s' * (shape['workers'] != 1)} × "
                f"{shape['threads']} thread{'s' * (shape['threads'] != 1)} per server; "
                f"{'production' if options['access'] == 'tokens' else 'development'} settings)",
            )
            # Prometheus first: it takes a few seconds to apply its targets, the servers'
            # start-up time (scraped_once then waits for its first scrape of them).
            scraper = observing.enter_context(
                prometheus.scraping(
                    staged, upstreams or [options["bind"]], port=runner.free_port(),
                    token=metrics_token() if options["access"] == "tokens" else None,
                )
            )  # fmt: skip
            started = time.monotonic()
            with serving as served:
                servers = served if cluster else [served]
                for server in servers:
                    runner.wait_healthy(url, server, run_id=run_id)
                self.phase(
                    "check",
                    f"healthy after {time.monotonic() - started:.1f} s, and it is this run's "
                    f"server (X-Loadtest-Run: {run_id})",
                )
                prometheus.scraped_once(scraper)
                self.phase("metrics", scraping_said(scraper))
                sampling = observing.enter_context(sampler.Sampler())
                status = self._swarm(url, staged, options)
                sampling.stop()
                if scraper.running:  # the workers' last flush, then its last scrape of it
                    time.sleep(FLUSH_INTERVAL_SECONDS + 1.5 * prometheus.SCRAPE_INTERVAL_S)
                if any(server.poll() is not None for server in servers):
                    problems.append(SERVER_DIED)
                stopping = time.monotonic()
            self.phase("stop", f"servers stopped in {time.monotonic() - stopping:.1f} s")
        options["url"] = url
        options["run_id"] = server_env and server_env.get(RUN_ID_VARIABLE)
        facts = report.run_facts(
            options=options, stored=stored, server_env=server_env, generated=generated,
            topology=topology,
        )  # fmt: skip
        summary = self._report(
            staged, options, facts, status=status, problems=problems, previous=previous,
            observed=(scraper, sampling),
        )  # fmt: skip
        self.phase("report", f"{Path(options['reports']) / 'index.html'}, summary below")
        return summary

    def phase(self, name: str, text: str) -> None:
        """One line for a phase of the run, at once (the console may be a pipe)."""
        self.stdout.write(f"== {name}: {text}")
        self.stdout.flush()

    def _prepare(self, rows: int, verbosity: int) -> dict | None:
        """Migrate, then generate ``rows`` rows unless the databases already hold that many;
        returns the generation's record (`runinfo.generation_saved`) if it ran."""
        call_command("migrate_all", verbosity=0)
        counts = row_counts()
        stored = sum(counts.values())
        tables = ", ".join(f"{table} {count:,}" for table, count in counts.items())
        if stored >= rows:
            self.phase("data", f"{stored:,} rows stored ({tables}): none to generate")
            return None
        self.phase("data", f"{stored:,} rows stored: generating {rows:,} more")
        started = time.monotonic()
        call_command("generate_data", rows=rows, verbosity=verbosity)
        seconds = time.monotonic() - started
        return runinfo.generation_saved(seconds=seconds, rows=rows, stored=row_counts())

    def _swarm(self, url: str, reports: Path, options: dict) -> int:
        every = options["progress_every"]
        self.phase(
            "swarm",
            f"{options['users']} users at {options['spawn_rate']:g}/s for {options['run_time']} "
            f"against {url}, access {options['access']}"
            + (f"; a progress line every {every:g} s" if every else ""),
        )
        return runner.swarm(
            url,
            users=options["users"],
            spawn_rate=options["spawn_rate"],
            run_time=options["run_time"],
            reports=reports,
            tags=options["tags"],
            processes=options["processes"],
            token=options["token"],
            progress_every=every,
        )

    def _report(
        self, reports: Path, options: dict, facts: dict, *, status: int, problems: list,
        previous: dict | None, observed: tuple[prometheus.Scraper, sampler.Sampler],
    ) -> dict:  # fmt: skip
        """Write ``summary.json``, ``summary.md`` and ``index.html`` into ``reports`` from
        Locust's files there, with ``server-metrics.json`` (asked of the run's Prometheus
        over Locust's window) and ``processes.json`` (the sampler's); returns the summary."""
        try:
            entries = read_stats(reports / "locust.json")
            total = read_total(reports / "locust_total.json")
            details = read_details(reports / "locust_run.json")
            summary = summarize(entries, users=options["users"], total=total, details=details)
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(f"Locust left no statistics ({exc}); exit status {status}") from exc
        summary["run"] = facts
        summary["server_side"] = self._server_side(reports, summary, *observed)
        summary["thresholds"] = thresholds(
            summary[TOTAL], p95_ms=options["p95_ms"], min_rps=options["min_rps"]
        )
        summary["cpu_warning"] = cpu_warning(reports / "locust.log")
        summary["comparisons"] = compare.comparisons(
            summary,
            previous=previous,
            tags=options["tags"],
            baseline=options.get("baseline_summary"),
            baseline_path=options["baseline"],
        )
        if status != 0 and not (status == 1 and summary[TOTAL]["failures"]):
            problems.append(f"Locust exit status {status} (see locust.log)")
        summary["breaches"] = breaches(summary["thresholds"]) + problems
        write_summary(summary, reports)
        report.write_report(summary, reports)
        return summary

    def _server_side(
        self, reports: Path, summary: dict, scraper: prometheus.Scraper, sampling: sampler.Sampler
    ) -> dict:
        """Ask Prometheus for the swarm's seconds, save its answers and the sampler's, and
        reduce both to `loadtest.server_side.figures` with the bottleneck's sentence."""
        span, steady = summary["window"], summary.get("steady")
        collected = prometheus.collect(
            scraper,
            start=span["start"] - 1,
            end=span["end"] + 1,
            steady_start=span["start"] + steady["start_s"] if steady else None,
        )
        prometheus.write(collected, reports)
        sampled = sampling.result()
        sampler.write(sampled, reports)
        figures = server_side.figures(summary, collected, sampled)
        figures["bottleneck"] = server_side.bottleneck(figures)
        return figures


def scraping_said(scraper: prometheus.Scraper) -> str:
    """The metrics phase's line: who scrapes what, or why nothing does."""
    if not scraper.running:
        return scraper.reason
    targets = ", ".join(f"{target}/metrics" for target in scraper.targets)
    return (
        f"Prometheus {scraper.version or ''} on {scraper.url.removeprefix('http://')} "
        f"scrapes {targets} every {prometheus.SCRAPE_INTERVAL_S} s"
    ).replace("  ", " ")
