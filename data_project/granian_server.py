"""Granian serving ``data_project.wsgi:application``: ``python -m data_project.granian_server``.

The second server beside Gunicorn (https://github.com/emmett-framework/granian): Rust reads
requests and writes responses, and Python threads only run the application. Its settings
come from the environment variables ``gunicorn.conf.py`` reads wherever they mean the same
thing (`granian_options`), through `data_project.env.Env`; the few that only Granian has
start with ``GRANIAN_``. https://github.com/emmett-framework/granian#options

- ``BIND``: address and port (``bind``);
- ``WEB_CONCURRENCY``: ``workers``;
- ``GUNICORN_THREADS``: ``blocking_threads``, the Python threads of a worker (1);
- ``GUNICORN_WORKER_CONNECTIONS``: ``backpressure``, the connections a worker holds, idle
  kept-alive ones included (1000);
- ``GUNICORN_BACKLOG``: ``backlog`` (2048);
- ``GUNICORN_KEEPALIVE``: HTTP/1 ``header_read_timeout``, which also bounds an idle
  kept-alive connection's wait for its next request (75, at most Granian's 60 s);
- ``GUNICORN_GRACEFUL_TIMEOUT``: ``workers_kill_timeout`` (30);
- ``GUNICORN_ACCESS_LOG``, ``GUNICORN_LOG_LEVEL``: ``log_access``, ``log_level``;
- ``GRANIAN_WORKERS_LIFETIME_SECONDS``: ``workers_lifetime``, a worker is replaced after
  this long (3600; at least Granian's 60; 0: never). Granian counts no requests, so
  Gunicorn's ``max_requests`` has no counterpart: recycling is by age.
- ``FORWARDED_ALLOW_IPS`` (``Env.trusted_proxies``): Gunicorn's ``forwarded_allow_ips``.
  `trust_proxy_headers` (Granian's own ``wrap_wsgi_with_proxy_headers``, its answers
  remembered) takes the scheme from ``X-Forwarded-Proto`` (and the client's address from
  ``X-Forwarded-For``) of a connection from one of them, and only then; served directly,
  nobody's.

As ``gunicorn.conf.py``'s ``preload_app`` and ``pre_fork`` do, the application is imported
once here and its objects frozen out of the collector's sight (`gc.freeze`) before the
workers fork; a worker that dies is replaced (``respawn_failed_workers``), SIGHUP replaces
every worker one at a time, SIGTERM and SIGINT stop gracefully.
"""

import functools
import gc
import importlib
import multiprocessing

from granian.constants import Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server

from api.domain.addresses import in_networks, proxy_networks
from data_project import metrics_dir
from data_project.env import Env

# Granian's bounds on what the environment may ask of it (its CLI's checks).
MAX_HEADER_READ_TIMEOUT_SECONDS = 60
MIN_WORKERS_LIFETIME_SECONDS = 60
TARGET = "data_project.wsgi:application"


def split_bind(bind: str) -> tuple[str, int]:
    """``("127.0.0.1", 8000)`` from ``"127.0.0.1:8000"``; ``[::1]:8000`` gives ``"::1"``.

    Raises `ValueError` naming ``bind`` without a ``:port`` or with a port that is no number.
    """
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"BIND must be host:port, not {bind!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def granian_options(env: Env | None = None) -> dict:
    """Keyword arguments of `granian.server.Server` read from ``env`` (the process's
    environment by default): address, port, workers, blocking threads, backpressure,
    backlog, HTTP/1 settings, worker lifetime and kill timeout, logging.

    Raises `django.core.exceptions.ImproperlyConfigured` naming a variable that does not
    parse, `ValueError` for a ``BIND`` that is not ``host:port``.
    """
    env = env or Env()
    address, port = split_bind(env.str("BIND", default="127.0.0.1:8000"))
    keepalive_s = env.int("GUNICORN_KEEPALIVE", default=75)
    lifetime_s = env.int("GRANIAN_WORKERS_LIFETIME_SECONDS", default=3600)
    return {
        "target": TARGET,
        "address": address,
        "port": port,
        "interface": Interfaces.WSGI,
        "workers": env.int("WEB_CONCURRENCY", default=2 * multiprocessing.cpu_count()),
        # One Python thread per worker, as Gunicorn's: lookups are CPU-bound under the GIL.
        # Slow clients do not hold it: Rust reads whole headers before the thread starts,
        # and takes the whole response from it.
        "blocking_threads": env.int("GUNICORN_THREADS", default=1),
        # Every connection a worker holds counts against its backpressure, an idle
        # kept-alive one too; past it the worker accepts nothing more. Granian's default
        # (backlog / workers) left 1000 idle keep-alive connections unserved at 4 workers
        # with a backlog of 1024 (api/tests/test_servers.py holds 1000 against this).
        "backpressure": env.int("GUNICORN_WORKER_CONNECTIONS", default=1000),
        "backlog": env.int("GUNICORN_BACKLOG", default=2048),
        "http1_settings": HTTP1Settings(
            # hyper's header read timeout also bounds an idle kept-alive connection's
            # wait for its next request: Gunicorn's keepalive, within Granian's bound.
            header_read_timeout=1000 * max(1, min(keepalive_s, MAX_HEADER_READ_TIMEOUT_SECONDS))
        ),
        "workers_lifetime": max(lifetime_s, MIN_WORKERS_LIFETIME_SECONDS) if lifetime_s else None,
        "workers_kill_timeout": env.int("GUNICORN_GRACEFUL_TIMEOUT", default=30) or None,
        "respawn_failed_workers": True,  # as Gunicorn's arbiter replaces a dead worker
        "log_access": env.bool("GUNICORN_ACCESS_LOG", default=False),
        "log_level": LogLevels(env.str("GUNICORN_LOG_LEVEL", default="info").lower()),
    }


# Addresses whose trust is remembered: the proxies and the clients they forward for.
TRUSTED_CACHE_SIZE = 1024


def trust_proxy_headers(application, proxies: tuple[str, ...]):
    """``application`` behind the ``proxies`` (addresses or networks): what Granian's
    ``granian.utils.proxies.wrap_wsgi_with_proxy_headers`` does, with its answers to
    "is this address a proxy?" remembered per address.

    From a peer among ``proxies`` with an ``X-Forwarded-For``: ``REMOTE_ADDR`` becomes
    the rightmost forwarded address that is not a proxy (else the leftmost), and an
    ``X-Forwarded-Proto`` of ``http`` or ``https`` becomes ``wsgi.url_scheme``; from
    anyone else nothing changes. Granian's wrapper parses the peer's address and tests it
    against every network on every request (``ipaddress`` objects built per request):
    about 27k instructions of a lookup's 338k behind nginx (``bench/instructions.py
    --server granian``). ``api/tests/test_servers.py`` holds the two to the same answers.
    Raises `ValueError` for a proxy that is no address or network.
    """
    networks = proxy_networks(proxies)

    @functools.lru_cache(maxsize=TRUSTED_CACHE_SIZE)
    def is_proxy(host: str | None) -> bool:
        return in_networks(host, networks)

    @functools.wraps(application)
    def trusting(environ, start_response):
        if is_proxy(environ.get("REMOTE_ADDR")):
            forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
            if forwarded_for:
                hosts = [host.strip() for host in forwarded_for.split(",")]
                client = next((host for host in reversed(hosts) if not is_proxy(host)), hosts[0])
                if client:
                    environ["REMOTE_ADDR"] = client
                    proto = environ.get("HTTP_X_FORWARDED_PROTO")
                    if proto in ("http", "https"):
                        environ["wsgi.url_scheme"] = proto
        return application(environ, start_response)

    return trusting


def main() -> None:
    """Serve the project with Granian until SIGTERM or SIGINT."""
    options = granian_options()
    metrics_dir.prepare(Env().bool("METRICS", default=True))  # before the app's import
    # Imported here, not at the top: reading the options (the load test's report does)
    # must not set Django up. Then frozen, as gunicorn.conf.py's pre_fork does.
    module, name = TARGET.split(":")
    application = getattr(importlib.import_module(module), name)
    proxies = Env().trusted_proxies()
    if proxies:
        application = trust_proxy_headers(application, proxies)
    gc.freeze()
    Server(**options).serve(target_loader=lambda _target: application)


if __name__ == "__main__":
    main()
