"""Run Gunicorn and a headless Locust swarm against it, and always stop both.

`serve` starts ``gunicorn -c gunicorn.conf.py data_project.wsgi`` in the background and
stops it with SIGTERM (a graceful shutdown) when the block ends, whether the swarm
finished, failed or was interrupted with Ctrl-C. `wait_healthy` polls ``/api/health/``.
`swarm` runs Locust with the repository's ``locust.conf`` plus the run's own figures, and
copies its log (stderr) into ``reports/locust.log`` while still showing it on the console.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from django.conf import settings

from loadtest.processes import stop_gracefully
from loadtest.proxy import nginx_proxy

REPO = Path(settings.BASE_DIR)


class ServerError(RuntimeError):
    """Gunicorn did not become healthy, or died."""


@contextmanager
def serve(
    bind: str, *, env: dict[str, str] | None = None, proxy: bool = False
) -> Iterator[subprocess.Popen]:
    """Gunicorn with the project's config on ``bind`` for the duration of the block.

    With ``proxy``, nginx (`loadtest.proxy`) listens on ``bind`` and Gunicorn on a free
    loopback port behind it. Yields Gunicorn's process.
    """
    if proxy:
        upstream = f"127.0.0.1:{free_port()}"
        with serve(upstream, env=env) as server:
            # nginx starts once Gunicorn answers: else it logs every early probe as an error.
            wait_healthy(f"http://{upstream}", server)
            with nginx_proxy(bind, upstream):
                yield server
        return
    command = [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")]
    environment = {**os.environ, **(env or {}), "BIND": bind}
    process = subprocess.Popen([*command, "data_project.wsgi"], cwd=REPO, env=environment)
    try:
        yield process
    finally:
        stop_gracefully(process, signal.SIGTERM)


@contextmanager
def serve_cluster(
    bind: str, instances: int, *, env: dict[str, str] | None = None
) -> Iterator[list[subprocess.Popen]]:
    """``instances`` Gunicorns, each on its own loopback port, behind nginx on ``bind``:
    one machine standing in for a load balancer and app hosts. Each gets an equal share of
    ``WEB_CONCURRENCY`` (from ``env`` or the environment; else gunicorn.conf.py's 2 per
    core in all), so the cluster runs as many workers as one Gunicorn would. Yields the
    Gunicorn processes."""
    env = cluster_env(env, instances)
    upstreams = [f"127.0.0.1:{free_port()}" for _ in range(instances)]
    with ExitStack() as stack:
        servers = [stack.enter_context(serve(address, env=env)) for address in upstreams]
        for address, server in zip(upstreams, servers, strict=True):
            wait_healthy(f"http://{address}", server)
        stack.enter_context(nginx_proxy(bind, upstreams))
        yield servers


def cluster_env(env: dict[str, str] | None, instances: int) -> dict[str, str]:
    """``env`` with ``WEB_CONCURRENCY`` set to one instance's share of the cluster's."""
    env = dict(env or {})
    total = int(env.get("WEB_CONCURRENCY") or os.environ.get("WEB_CONCURRENCY") or 0)
    total = total or 2 * (os.cpu_count() or 1)
    env["WEB_CONCURRENCY"] = str(max(1, total // instances))
    return env


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 60) -> None:
    """Return once ``url/api/health/`` answers 200; raises `ServerError` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(f"gunicorn exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/health/", timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise ServerError(f"{url}/api/health/ not healthy after {timeout:.0f} s: {last}")


def swarm(
    url: str,
    *,
    users: int,
    spawn_rate: float,
    run_time: str,
    reports: Path,
    tags: list[str] | None = None,
    processes: int | None = None,
    token: str | None = None,
) -> int:
    """Run headless Locust; returns its exit status (1 when any request failed).

    ``token``: the API token the swarm sends (``LOCUST_API_TOKEN``, see ``locustfile``).
    Writes Locust's HTML report, ``locust_*.csv`` (the history with a row per request kind),
    ``locust.json``, ``locust_total.json`` (its aggregated entry, see ``locustfile``) and
    ``locust.log`` into ``reports``.
    """
    reports.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "locust",
        "--config", str(REPO / "locust.conf"),
        "--locustfile", str(REPO / "locustfile.py"),
        "--headless", "--only-summary",
        "--host", url,
        "--users", str(users),
        "--spawn-rate", str(spawn_rate),
        "--run-time", run_time,
        "--csv", str(reports / "locust"), "--csv-full-history",
        "--html", str(reports / "locust.html"),
        "--json-file", str(reports / "locust"),
    ]  # fmt: skip
    if tags:
        command += ["--tags", *tags]
    if processes:
        command += ["--processes", str(processes)]
    env = {**os.environ, "LOCUST_API_TOKEN": token or ""}
    (reports / "locust_total.json").unlink(missing_ok=True)  # a previous run's
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    with (reports / "locust.log").open("w") as log:
        copier = threading.Thread(target=_tee, args=(process.stderr, log), daemon=True)
        copier.start()
        try:
            process.wait()
        finally:
            process.wait()  # also after Ctrl-C, which Locust receives and handles too
            copier.join(timeout=5)  # Locust's worker processes may hold the pipe longer
    return process.returncode


def _tee(lines: IO[str], log: IO[str]) -> None:
    """Copy ``lines`` to the console's stderr and to ``log`` until they end or it closes."""
    try:
        for line in lines:
            sys.stderr.write(line)
            log.write(line)
    except ValueError:  # log closed: the master exited while a worker held the pipe
        pass
