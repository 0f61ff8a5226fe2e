"""CPU and memory of the run's processes, once a second, with psutil.

Prometheus sees the servers' own processes (their ``/metrics``); `Sampler` sees the rest of
the run from outside: nginx, the Locust master and workers, Prometheus itself, the
PostgreSQL servers the run's aliases use, and the server processes too (so that a run
without Prometheus still shows them). The processes are found anew each second: this
process's descendants by what they run (`role`), and the PostgreSQL postmasters
(`postgres_servers`) with their children, of which only the backends serving the run's
databases and the server's own auxiliary processes count (the cluster may serve other
clients too).

`write` saves ``processes.json``: ``{"interval_s", "cores", "machine": [[t, cpu % of all
cores]], "processes": [{"pid", "role", "command", "points": [[t, cpu % of one core,
rss bytes]]}]}``, t in Unix seconds; PostgreSQL's points add the PSS in bytes (its
processes share the buffers, which each one's RSS counts again).
"""

import json
import re
import threading
import time
from pathlib import Path

import psutil
from django.conf import settings
from django.db import DatabaseError, connections

PROCESSES = "processes.json"
INTERVAL_S = 1.0
POSTGRESQL, POSTGRESQL_REPLICA = "postgresql", "postgresql replica"
# A backend's title: ``postgres: [cluster: ]user database host(port) state`` (Debian's
# servers name their cluster, ``15/main:``); the auxiliary processes have no client.
BACKEND = re.compile(r" (?P<user>\S+) (?P<database>\S+) (?:\S+\(\d+\)|\[local\])")


def role(process: psutil.Process, parent_role: str | None) -> str | None:
    """What one of the run's descendant processes is, from its command line and its
    parent's role: ``locust master``/``locust worker``, ``nginx master``/``nginx
    worker``, ``prometheus``, ``gunicorn master``/``gunicorn worker``, ``granian
    master``/``granian worker``; None for anything else."""
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return None
    if parent_role and parent_role.endswith(" master"):
        return parent_role.replace(" master", " worker")
    if parent_role and parent_role.endswith(" worker"):
        return parent_role  # a worker's own children (Granian's, Locust's)
    if "locust" in command:
        return "locust master"
    if command.startswith("nginx"):
        return "nginx master"
    if process.name() == "prometheus":
        return "prometheus"
    if "gunicorn" in command:
        return "gunicorn master"
    if "granian" in command:
        return "granian master"
    return None


def children_of() -> dict[int, list[psutil.Process]]:
    """ppid -> its child processes, from one pass over the process table (psutil's
    ``children()`` makes a pass of its own for each process it is asked about)."""
    children: dict[int, list[psutil.Process]] = {}
    for process in psutil.process_iter(["ppid"]):
        children.setdefault(process.info["ppid"], []).append(process)
    return children


def descendants(
    root: psutil.Process, children: dict[int, list[psutil.Process]], roles: dict[int, str]
) -> dict[int, tuple[psutil.Process, str]]:
    """pid -> (process, role) for every descendant of ``root`` that has a `role`;
    ``children``: `children_of`'s; ``roles``: the roles found before, by pid (a process's
    role does not change), added to."""
    found: dict[int, tuple[psutil.Process, str]] = {}

    def walk(pid: int, parent_role: str | None) -> None:
        for child in children.get(pid, []):
            if child.pid not in roles:
                roles[child.pid] = role(child, parent_role)
            if roles[child.pid]:
                found[child.pid] = (child, roles[child.pid])
            walk(child.pid, roles[child.pid])

    walk(root.pid, None)
    return found


def postgres_servers() -> list[tuple[int, str, set[str]]]:
    """``(postmaster pid, role, database names)`` for each PostgreSQL server on this
    machine that a database alias uses: its backend's parent is the postmaster. Aliases
    that are not PostgreSQL, or whose server runs elsewhere, are left out."""
    replicas = {r for names in getattr(settings, "DATABASE_REPLICAS", {}).values() for r in names}
    servers: dict[int, tuple[str, set[str]]] = {}
    for alias in settings.DATABASES:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid(), current_database()")
                backend, database = cursor.fetchone()
            postmaster = psutil.Process(backend).ppid()
        except (DatabaseError, psutil.Error):
            continue  # unreachable, or on another host
        finally:
            connection.close()
        kind = POSTGRESQL_REPLICA if alias in replicas else POSTGRESQL
        _, names = servers.setdefault(postmaster, (kind, set()))
        names.add(database)
    return [(pid, kind, names) for pid, (kind, names) in servers.items()]


def postgres_processes(
    postmaster: int,
    kind: str,
    databases: set[str],
    children: dict[int, list[psutil.Process]],
    roles: dict[int, str | None],
) -> dict:
    """pid -> (process, role) for a postmaster and its children that work for the run:
    the auxiliary processes (``postgres: checkpointer``, ...) and the backends connected
    to ``databases`` (`BACKEND`); ``children`` and
    ``roles`` as `descendants` takes them."""
    found = {}
    try:
        found[postmaster] = (psutil.Process(postmaster), kind)
    except psutil.Error:
        return found
    for child in children.get(postmaster, []):
        if child.pid not in roles:
            try:
                backend = BACKEND.search(" ".join(child.cmdline()))
            except psutil.Error:
                continue
            roles[child.pid] = kind if not backend or backend["database"] in databases else None
        if roles[child.pid]:
            found[child.pid] = (child, kind)
    return found


class Sampler:
    """Samples the run's processes every `INTERVAL_S` seconds in a thread, from `start`
    to `stop`; `result` is what `write` saves."""

    def __init__(self, interval: float = INTERVAL_S):
        self.interval = interval
        self.root = psutil.Process()
        self.postgres = postgres_servers()
        self.known: dict[int, psutil.Process] = {}
        self.roles: dict[int, str | None] = {}  # by pid, once found: None for no role
        self.series: dict[int, dict] = {}
        self.machine: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def start(self) -> "Sampler":
        psutil.cpu_percent()  # the machine's first figure counts from here
        self._thread.start()
        return self

    def stop(self) -> dict:
        """Stop sampling; returns `result`."""
        self._stop.set()
        self._thread.join(timeout=10)
        return self.result()

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample(time.time())
            except psutil.Error:
                continue  # a process went away between the listing and the reading

    def processes(self) -> dict[int, tuple[psutil.Process, str]]:
        """pid -> (process, role) of everything sampled now."""
        children = children_of()
        found = descendants(self.root, children, self.roles)
        for postmaster, kind, databases in self.postgres:
            found |= postgres_processes(postmaster, kind, databases, children, self.roles)
        return found

    def sample(self, now: float) -> None:
        """One sample of every process, at ``now`` (Unix seconds). A process's first
        reading has no CPU figure (psutil's counts from the one before)."""
        self.machine.append([round(now, 3), psutil.cpu_percent()])
        for pid, (process, process_role) in self.processes().items():
            known = self.known.setdefault(pid, process)
            try:
                with known.oneshot():
                    cpu = known.cpu_percent()
                    rss = known.memory_info().rss
                    # PostgreSQL's processes share its buffers: summed, only PSS adds up.
                    pss = process_role.startswith(POSTGRESQL) and known.memory_full_info().pss
                    if pid not in self.series:
                        command = " ".join(known.cmdline())[:160]
                        self.series[pid] = {
                            "pid": pid, "role": process_role, "command": command, "points": []
                        }  # fmt: skip
            except psutil.Error:
                continue
            series = self.series[pid]
            first = not series["points"]
            point = [round(now, 3), None if first else cpu, rss]
            series["points"].append([*point, pss] if pss else point)

    def result(self) -> dict:
        return {
            "interval_s": self.interval,
            "cores": psutil.cpu_count() or 1,
            "machine": self.machine,
            "processes": sorted(self.series.values(), key=lambda s: (s["role"], s["pid"])),
        }


def write(result: dict, folder: Path) -> Path:
    """Save a `Sampler.result` as ``processes.json`` in ``folder``."""
    path = Path(folder) / PROCESSES
    path.write_text(json.dumps(result) + "\n")
    return path


def read(folder: Path) -> dict | None:
    """``processes.json`` of a run, or None when it has none."""
    path = Path(folder) / PROCESSES
    return json.loads(path.read_text()) if path.exists() else None
