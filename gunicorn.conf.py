"""Gunicorn settings, read by ``gunicorn data_project.wsgi`` from the repository root.

Every knob comes from the environment (``WEB_CONCURRENCY`` is the Heroku/Render/Gunicorn
convention for the worker count) with defaults measured on the 2-core target machine.
https://docs.gunicorn.org/en/stable/settings.html
"""

import gc
import multiprocessing
import os


def _env(name: str, default: str) -> str:
    """A variable's value; unset or blank (make exports unset variables as "") is default."""
    return os.environ.get(name, "").strip() or default


def _env_int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


bind = _env("BIND", "127.0.0.1:8000")

# gthread: each worker keeps its idle HTTP keep-alive connections in a poller instead of a
# thread each, so 1000 clients fit; each thread holds its own persistent SQLite connection.
# Lookups are CPU-bound under the GIL: a second thread per worker only adds GIL contention
# under a swarm, while more single-threaded workers than cores keep both cores busy while
# one worker waits on its socket or SQLite. Default: two workers per core, one thread
# (the shapes measured: docs/performance.md, "Serving"; gevent cannot run preload_app).
worker_class = _env("GUNICORN_WORKER_CLASS", "gthread")
workers = _env_int("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count())
threads = _env_int("GUNICORN_THREADS", 1)
worker_connections = _env_int("GUNICORN_WORKER_CONNECTIONS", 1000)

# Room in the accept queue for a 1000-user swarm that connects all at once.
backlog = _env_int("GUNICORN_BACKLOG", 2048)
keepalive = _env_int("GUNICORN_KEEPALIVE", 75)
timeout = _env_int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)

# Recycle workers now and then (leaks, fragmentation); jitter keeps them from restarting
# together.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 20000)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 2000)

# Import the app once in the master; workers fork with it loaded. Safe: no database
# connection is opened at import time.
preload_app = True


def pre_fork(server, worker) -> None:
    """Freeze the preloaded app's objects out of the cyclic garbage collector's sight.

    Python's documented recipe for fork without exec (``gc.freeze``): a worker's
    collections then neither walk the ~90k objects Django and the app left in the
    master nor write to their pages, which copy-on-write would duplicate per worker
    (measured: ``docs/performance.md``).
    """
    gc.freeze()


# Gunicorn 27's control socket lives at one path per user; two servers on one host (a
# benchmark beside a test run) would fight over it. Opt in with GUNICORN_CONTROL_SOCKET.
control_socket_disable = not _env("GUNICORN_CONTROL_SOCKET", "")
if not control_socket_disable:
    control_socket = _env("GUNICORN_CONTROL_SOCKET", "")

accesslog = "-" if _env("GUNICORN_ACCESS_LOG", "").lower() in {"1", "true"} else None
errorlog = "-"
loglevel = _env("GUNICORN_LOG_LEVEL", "info")
