"""Gunicorn settings, read by ``gunicorn data_project.wsgi`` from the repository root.

Every knob comes from the environment (``WEB_CONCURRENCY`` is the Heroku/Render/Gunicorn
convention for the worker count) with defaults measured on the 2-core target machine.
https://docs.gunicorn.org/en/stable/settings.html
"""

import gc
import json
import multiprocessing
import sys
from pathlib import Path

import gunicorn.util

# This file's folder, the repository root, holds data_project: importable whatever folder
# Gunicorn runs in (``-c /path/to/gunicorn.conf.py`` serving another app, as the benchmarks
# serve the anchors). Appended, so it shadows nothing of the served app's folder.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))

from data_project import metrics_dir
from data_project.env import Env

env = Env()  # as settings.py reads the environment: blank is unset, bad numbers named
# Before the app is preloaded: the workers' metrics go to this server's own directory.
metrics_dir.prepare(env.bool("METRICS", default=True))

bind = env.str("BIND", default="127.0.0.1:8000")

# gthread: each worker keeps its idle HTTP keep-alive connections in a poller instead of a
# thread each, so 1000 clients fit; each thread holds its own persistent SQLite connection.
# Lookups are CPU-bound under the GIL: a second thread per worker only adds GIL contention
# under a swarm, while more single-threaded workers than cores keep both cores busy while
# one worker waits on its socket or SQLite. Default: two workers per core, one thread
# (the shapes measured: docs/performance.md, "Serving"; gevent cannot run preload_app).
worker_class = env.str("GUNICORN_WORKER_CLASS", default="gthread")
workers = env.int("WEB_CONCURRENCY", default=2 * multiprocessing.cpu_count())
# ...with a proxy in front (NUM_PROXIES, as settings.py reads it), which reads whole
# requests and takes whole responses. Served directly, a worker's thread reads a request's
# headers and writes its response itself, and Gunicorn has no header-read timeout: one
# client trickling its headers, or not reading its answer, holds that thread. So each
# worker gets DIRECT_THREADS threads, and fewer slow connections than that per worker
# leave it serving (measured: docs/performance.md, "Slow clients"; a proxy or Granian
# holds for any number).
DIRECT_THREADS = 16
threads = env.int(
    "GUNICORN_THREADS", default=1 if env.int("NUM_PROXIES", default=0) else DIRECT_THREADS
)
worker_connections = env.int("GUNICORN_WORKER_CONNECTIONS", default=1000)

# The scheme comes from the proxy alone: X-Forwarded-Proto (which deploy/nginx.conf sets
# to its own $scheme) is believed only from FORWARDED_ALLOW_IPS, nobody when served
# directly (data_project/env.py), and it is the only header read for it: Gunicorn's
# default also believes X-Forwarded-Ssl and X-Forwarded-Protocol, which a proxy passes on
# from its client unless told to drop them. Django reads only wsgi.url_scheme.
forwarded_allow_ips = ",".join(env.trusted_proxies())
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# Room in the accept queue for a 1000-user swarm that connects all at once.
backlog = env.int("GUNICORN_BACKLOG", default=2048)
keepalive = env.int("GUNICORN_KEEPALIVE", default=75)
timeout = env.int("GUNICORN_TIMEOUT", default=30)
graceful_timeout = env.int("GUNICORN_GRACEFUL_TIMEOUT", default=30)

# Recycle workers now and then (leaks, fragmentation); jitter keeps them from restarting
# together.
max_requests = env.int("GUNICORN_MAX_REQUESTS", default=20000)
max_requests_jitter = env.int("GUNICORN_MAX_REQUESTS_JITTER", default=2000)

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
control_socket_disable = not env.str("GUNICORN_CONTROL_SOCKET", default="")
if not control_socket_disable:
    control_socket = env.str("GUNICORN_CONTROL_SOCKET")

accesslog = "-" if env.bool("GUNICORN_ACCESS_LOG", default=False) else None
errorlog = "-"
loglevel = env.str("GUNICORN_LOG_LEVEL", default="info")


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Gunicorn's own answer to a request it cannot read (a bad request line or header,
    414, 431, a bad chunk: status ``status_int``) in the API's error envelope,
    ``{"error": "<reason>", "details": {}}``, instead of its HTML page. ``mesg``, which
    quotes what the client sent, is left out: it is in Gunicorn's log line.

    Gunicorn has no setting for these pages; its worker writes them with
    ``gunicorn.util.write_error``, which this replaces (api/tests/test_servers.py sends
    each kind of request and pins the function's signature).
    """
    body = json.dumps({"error": reason.lower(), "details": {}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


gunicorn.util.write_error = write_json_error
