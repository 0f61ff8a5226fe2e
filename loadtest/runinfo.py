"""What a load test ran on: code, databases, data, server shape, machine and versions.

Each function answers one question for the report and says "unknown" rather than guess.
`server_shape` evaluates ``gunicorn.conf.py`` (`gunicorn_shape`) or
`data_project.granian_server.granian_options` (`granian_shape`) under the environment the
server was given, so the workers and threads shown are what the server read, not what we
meant to pass; `server_software` asks a running server its name.
`generation_record` / `generation_saved` keep the time of the last ``generate_data`` that
``loadtest`` ran in ``DATA_DIR``, so that a later run over the same rows can still show it.
"""

import json
import os
import platform
import runpy
import subprocess
import urllib.error
import urllib.request
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.db import connections

from data_project.env import Env
from data_project.granian_server import granian_options

REPO = Path(settings.BASE_DIR)
GENERATION_FILE = "loadtest-generation.json"
PACKAGES = ("Django", "djangorestframework", "locust", "gunicorn", "granian")


def git_commit(repo: Path = REPO) -> str:
    """The short commit hash, with ``-dirty`` when tracked files changed; else "unknown"."""
    try:
        commit = _git(repo, "rev-parse", "--short", "HEAD")
        dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def _git(repo: Path, *args: str) -> str:
    run = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return run.stdout.strip()


def backends() -> list[dict]:
    """Per alias: vendor, database name and host (never the password), replica of what."""
    replica_of = {
        replica: alias
        for alias, replicas in getattr(settings, "DATABASE_REPLICAS", {}).items()
        for replica in replicas
    }
    return [
        {
            "alias": alias,
            "vendor": connections[alias].vendor,
            "name": str(config.get("NAME") or ""),
            "host": ":".join(
                str(part) for part in (config.get("HOST"), config.get("PORT")) if part
            ),
            "replica_of": replica_of.get(alias, ""),
        }
        for alias, config in settings.DATABASES.items()
    ]


def gunicorn_shape(env: dict[str, str]) -> dict:
    """``{"worker_class", "workers", "threads"}`` as ``gunicorn.conf.py`` computes them in a
    process whose environment is this one updated with ``env`` (what `runner.serve` does)."""
    with mock.patch.dict(os.environ, env):
        conf = runpy.run_path(str(REPO / "gunicorn.conf.py"))
    return {key: conf[key] for key in ("worker_class", "workers", "threads")}


def granian_shape(env: dict[str, str]) -> dict:
    """``{"worker_class": "wsgi", "workers", "threads", "backpressure"}`` (threads: Granian's
    blocking threads per worker) as `granian_options` computes them under this process's
    environment updated with ``env``."""
    options = granian_options(Env({**os.environ, **env}))
    return {
        "worker_class": "wsgi",
        "workers": options["workers"],
        "threads": options["blocking_threads"],
        "backpressure": options["backpressure"],
    }


def server_shape(server: str, env: dict[str, str]) -> dict:
    """``{"worker_class", "workers", "threads", ...}`` of ``server`` ("gunicorn" or
    "granian") started with ``env``; raises `KeyError` for another name."""
    return {"gunicorn": gunicorn_shape, "granian": granian_shape}[server](env)


def server_software(url: str) -> str:
    """The ``Server`` header of ``url``'s ``/api/health/`` ("gunicorn", "granian"), or
    "unknown" when it does not answer or sends none."""
    try:
        with urllib.request.urlopen(f"{url}/api/health/", timeout=5) as response:
            return response.headers.get("Server") or "unknown"
    except urllib.error.HTTPError as exc:
        return exc.headers.get("Server") or "unknown"
    except OSError:
        return "unknown"


def versions() -> dict[str, str]:
    """Python's version and each package's installed version ("unknown" if missing)."""
    found = {"Python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "unknown"
    return found


def cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def generation_saved(*, seconds: float, rows: int, stored: dict[str, int]) -> dict:
    """Record a ``generate_data`` run of ``rows`` rows that took ``seconds`` and left
    ``stored`` rows per table; returns the record."""
    record = {
        "seconds": round(seconds, 1),
        "rows": rows,
        "stored": stored,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = Path(settings.DATA_DIR) / GENERATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def generation_record() -> dict | None:
    """The last recorded ``generate_data`` run in ``DATA_DIR``, if any."""
    path = Path(settings.DATA_DIR) / GENERATION_FILE
    return json.loads(path.read_text()) if path.exists() else None
