"""Run a server (Gunicorn or Granian) and a headless Locust swarm against it; always stop both.

`serve` starts the chosen server in the background, ``gunicorn -c gunicorn.conf.py
data_project.wsgi`` or ``python -m data_project.granian_server`` (`SERVERS`), and stops it
with SIGTERM (a graceful shutdown for both) when the block ends, whether the swarm
finished, failed or was interrupted with Ctrl-C. `wait_healthy` polls ``/api/health/`` and,
given the run id the server was started with (`new_run_id`, ``LOADTEST_RUN_ID``), refuses
an answer that does not carry it: another server on the address (`NotOurServer`).
`swarm` runs Locust with the repository's ``locust.conf`` plus the run's own figures, and
copies its log (stderr) into ``reports/locust.log`` while still showing it on the console.
Every child runs in a session of its own (`OWN_SESSION`), so Ctrl-C reaches this process
alone and each child is stopped here, gracefully.
"""

import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

import psutil
from django.conf import settings

from data_project.run_id import RUN_ID_HEADER, RUN_ID_VARIABLE
from loadtest.processes import stop_gracefully
from loadtest.proxy import nginx_proxy

REPO = Path(settings.BASE_DIR)
# Every child (server, nginx, Locust) in a session of its own: a Ctrl-C in the terminal
# reaches this process alone, which stops each child itself (no child prints its own
# KeyboardInterrupt, and none is left half-stopped).
OWN_SESSION = {"start_new_session": True}
GUNICORN, GRANIAN = "gunicorn", "granian"
# Each server's command line, run in the repository's root; both read BIND and the same
# variables (gunicorn.conf.py, data_project/granian_server.py).
SERVERS = {
    GUNICORN: [
        sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py"), "data_project.wsgi"
    ],
    GRANIAN: [sys.executable, "-m", "data_project.granian_server"],
}  # fmt: skip


class ServerError(RuntimeError):
    """The server did not become healthy, or died."""


class PortInUse(ServerError):
    """The address a run would serve on is taken: by an earlier ``make serve``, say.

    Checked before anything starts, so a run never measures whatever already answers there.
    """


def require_free(bind: str) -> None:
    """Raise `PortInUse` when something listens on ``bind`` (``host:port``), naming the
    process that holds it when the system tells (psutil). A port left in TIME_WAIT by an
    earlier run counts as free, as it does for Gunicorn and nginx (SO_REUSEADDR)."""
    host, _, port = bind.rpartition(":")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host or "127.0.0.1", int(port)))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(
                f"{bind} is already in use{port_holder(int(port))}: stop it (a `make serve` "
                "still running?) or choose another --bind"
            ) from exc


class NotOurServer(ServerError):
    """What answers on the run's address is not the server the run started: the run id
    it was given is not in the answer's ``X-Loadtest-Run`` header."""


def new_run_id() -> str:
    """A fresh id for a run's servers (``LOADTEST_RUN_ID``): 12 hex digits."""
    return secrets.token_hex(6)


def port_holder(port: int) -> str:
    """`` by pid N (command line)`` of the process listening on ``port``, or ``""``."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                command = " ".join(psutil.Process(conn.pid).cmdline())[:120]
                return f" by pid {conn.pid} ({command})"
    except (psutil.Error, OSError):
        pass  # not allowed to look: the port alone is still named
    return ""


def behind_proxy_env(env: dict[str, str] | None) -> dict[str, str]:
    """``env`` for a server behind nginx: ``NUM_PROXIES=1`` unless ``env`` says otherwise
    (nginx appends the client to ``X-Forwarded-For``, and gunicorn.conf.py gives single-
    threaded workers to a server with a proxy in front)."""
    return {"NUM_PROXIES": "1", **(env or {})}


@contextmanager
def serve(
    bind: str,
    *,
    env: dict[str, str] | None = None,
    proxy: bool = False,
    server: str = GUNICORN,
    upstream: str | None = None,
) -> Iterator[subprocess.Popen]:
    """``server`` (a key of `SERVERS`) with the project's config on ``bind`` for the
    duration of the block; ``env`` is added to this process's environment.

    With ``proxy``, nginx (`loadtest.proxy`) listens on ``bind`` and the server behind it
    on ``upstream`` (``host:port``; default a free loopback port). Yields the server's main
    process (Gunicorn's arbiter, Granian's main process; the workers are its children).
    Raises `PortInUse` first when ``bind`` is taken, `NotOurServer` when ``env`` gives a
    ``LOADTEST_RUN_ID`` and another server answers on ``upstream``.
    """
    require_free(bind)
    if proxy:
        upstream = upstream or f"127.0.0.1:{free_port()}"
        with serve(upstream, env=behind_proxy_env(env), server=server) as process:
            # nginx starts once the server answers: else it logs every early probe as an error.
            wait_healthy(f"http://{upstream}", process, run_id=run_id_of(env))
            with nginx_proxy(bind, upstream):
                yield process
        return
    environment = {**os.environ, **(env or {}), "BIND": bind}
    process = subprocess.Popen(SERVERS[server], cwd=REPO, env=environment, **OWN_SESSION)
    try:
        yield process
    finally:
        stop_gracefully(process, signal.SIGTERM)


@contextmanager
def serve_cluster(
    bind: str,
    instances: int,
    *,
    env: dict[str, str] | None = None,
    server: str = GUNICORN,
    upstreams: list[str] | None = None,
) -> Iterator[list[subprocess.Popen]]:
    """``instances`` servers (``server``: a key of `SERVERS`), each on its own loopback port
    (``upstreams``, default free ones), behind nginx on ``bind``: one machine standing in
    for a load balancer and app hosts. Each gets an equal share of ``WEB_CONCURRENCY``
    (from ``env`` or the environment; else 2 per core in all), so the cluster runs as many
    workers as one server would. Yields the servers' main processes. Raises `PortInUse`
    first when ``bind`` is taken, `NotOurServer` as `serve` does."""
    require_free(bind)
    env = behind_proxy_env(cluster_env(env, instances))
    upstreams = upstreams or [f"127.0.0.1:{free_port()}" for _ in range(instances)]
    with ExitStack() as stack:
        servers = [
            stack.enter_context(serve(address, env=env, server=server)) for address in upstreams
        ]
        for address, server in zip(upstreams, servers, strict=True):
            wait_healthy(f"http://{address}", server, run_id=run_id_of(env))
        stack.enter_context(nginx_proxy(bind, upstreams))
        yield servers


def cluster_env(env: dict[str, str] | None, instances: int) -> dict[str, str]:
    """``env`` with ``WEB_CONCURRENCY`` set to one instance's share of the cluster's."""
    env = dict(env or {})
    total = int(env.get("WEB_CONCURRENCY") or os.environ.get("WEB_CONCURRENCY") or 0)
    total = total or 2 * (os.cpu_count() or 1)
    env["WEB_CONCURRENCY"] = str(max(1, total // instances))
    return env


def topology(bind: str, server: str, upstreams: list[str]) -> str:
    """Who listens where: ``nginx on A -> gunicorn on B`` (``upstreams``: the servers'
    addresses behind nginx; none: ``server`` listens on ``bind`` itself)."""
    if not upstreams:
        return f"{server} on {bind}"
    servers = (
        f"{server} on {upstreams[0]}"
        if len(upstreams) == 1
        else (f"{len(upstreams)} {server} servers on {', '.join(upstreams)}")
    )
    return f"nginx on {bind} -> {servers}"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_id_of(env: dict[str, str] | None) -> str | None:
    """The run id ``env`` gives a server (``LOADTEST_RUN_ID``), or None."""
    return (env or {}).get(RUN_ID_VARIABLE) or None


def wait_healthy(
    url: str,
    process: subprocess.Popen | None = None,
    timeout: float = 60,
    *,
    run_id: str | None = None,
) -> None:
    """Return once ``url/api/health/`` answers 200; raises `ServerError` after ``timeout`` s
    or when ``process`` exits. With ``run_id``, the 200 must carry it in ``X-Loadtest-Run``:
    one that does not raises `NotOurServer` at once, naming the process that listens on
    the port."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(f"the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/health/", timeout=5) as response:
                if run_id is not None:
                    require_run(url, run_id, response.headers.get(RUN_ID_HEADER))
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:  # not healthy (yet), or nginx's own 502
            last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise ServerError(f"{url}/api/health/ not healthy after {timeout:.0f} s: {last}")


def require_run(url: str, run_id: str, answered: str | None) -> None:
    """Raise `NotOurServer` unless ``answered`` (the ``X-Loadtest-Run`` header) is ``run_id``."""
    if answered == run_id:
        return
    port = urllib.parse.urlsplit(url).port
    said = f"{RUN_ID_HEADER}: {answered}" if answered else f"no {RUN_ID_HEADER} header"
    raise NotOurServer(
        f"{url} answers, but not as the server this run started ({said}, expected "
        f"{run_id}): the port was taken{port_holder(port) if port else ''} after the run "
        "checked it; stop that server or choose another --bind"
    )


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
    progress_every: float = 0,
) -> int:
    """Run headless Locust; returns its exit status (1 when any request failed).

    ``token``: the API token the swarm sends (``LOCUST_API_TOKEN``, see ``locustfile``);
    ``progress_every``: seconds between its progress lines on the console (0: none).
    Writes Locust's HTML report, ``locust_*.csv`` (the history with a row per request kind),
    ``locust.json``, ``locust_total.json`` and ``locust_run.json`` (see ``locustfile``) and
    ``locust.log`` (its whole log; the console shows its warnings and errors only) into
    ``reports``.
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
    if progress_every:
        command += ["--progress-every", str(progress_every)]
    if tags:
        command += ["--tags", *tags]
    if processes:
        # The master's port for its workers: a free one on loopback, not Locust's 5557 on
        # every interface, which a second run (or anything else) may hold.
        port = str(free_port())
        command += ["--processes", str(processes), "--master-bind-host", "127.0.0.1"]
        command += ["--master-bind-port", port, "--master-port", port]
    env = {**os.environ, "LOCUST_API_TOKEN": token or ""}
    (reports / "locust_total.json").unlink(missing_ok=True)  # a previous run's
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, **OWN_SESSION
    )
    with (reports / "locust.log").open("w") as log:
        copier = threading.Thread(target=_tee, args=(process.stderr, log), daemon=True)
        copier.start()
        try:
            process.wait()
        finally:
            # Ctrl-C reached this process alone (OWN_SESSION): Locust stops on SIGTERM.
            stop_gracefully(process, signal.SIGTERM, timeout=30)
            copier.join(timeout=5)  # Locust's worker processes may hold the pipe longer
    return process.returncode


# Locust's log lines below WARNING (its start, ramp-up, shutdown): the log keeps them, the
# console has the run's own phase and progress lines instead.
QUIET = ("/INFO/", "/DEBUG/")


def _tee(lines: IO[str], log: IO[str]) -> None:
    """Copy ``lines`` to ``log`` and, but for `QUIET` ones, to the console's stderr, until
    they end or ``log`` closes."""
    try:
        for line in lines:
            if not any(level in line for level in QUIET):
                sys.stderr.write(line)
            log.write(line)
    except ValueError:  # log closed: the master exited while a worker held the pipe
        pass
