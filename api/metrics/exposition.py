"""The body of ``GET /metrics``: every live worker's metrics and the server's processes.

Under a pre-forking server (``PROMETHEUS_MULTIPROC_DIR`` set) the client's
`MultiProcessCollector` sums the files every worker wrote, a dead worker's counters
included (a recycled worker's requests still happened); the files of its gauges that count
only live workers are removed first (`forget_dead_workers`: done here, at scrape time,
because Granian has no hook for a worker's exit as Gunicorn's ``child_exit`` is). Without
it, the process's own registry is rendered.

The client's `ProcessCollector` reads one process's ``/proc/<pid>/stat``: `ServerProcesses`
runs it for the server's master and each of its workers, labelled ``pid`` and ``role``,
since in multiprocess mode no worker can report another's CPU and memory.
"""

import os
import re
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from api.metrics.batching import flush_all

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
FILE_PID = re.compile(r"_(\d+)\.db$")
# What ServerProcesses reports of each process (the collector's others describe no load).
PROCESS_METRICS = frozenset({"process_cpu_seconds", "process_resident_memory_bytes"})
MASTER, WORKER, SERVER = "master", "worker", "server"


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: it exists
        return True
    return True


def worker_pids(directory: str) -> set[int]:
    """The pids that wrote metric files in ``directory``: this server's workers, live or
    dead (and its master, if it recorded anything before forking)."""
    return {
        int(match.group(1))
        for name in os.listdir(directory)
        if (match := FILE_PID.search(name)) is not None
    }


def forget_dead_workers(directory: str) -> set[int]:
    """Remove the live-gauge files of dead workers from ``directory``; the live pids."""
    live = set()
    for pid in worker_pids(directory):
        if alive(pid):
            live.add(pid)
        else:
            mark_process_dead(pid, directory)
    return live


class ServerProcesses:
    """A collector: CPU seconds and resident memory of each of ``pids`` by role."""

    def __init__(self, roles: dict[int, str]):
        self.roles = roles

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for pid, role in sorted(self.roles.items()):
            for found in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                if found.name not in PROCESS_METRICS:
                    continue
                family = families.get(found.name)
                if family is None:
                    family = families[found.name] = Metric(
                        found.name, found.documentation, found.type
                    )
                for sample in found.samples:
                    labels = {**sample.labels, "pid": str(pid), "role": role}
                    family.add_sample(sample.name, labels, sample.value)
        return list(families.values())


def server_roles(live: set[int]) -> dict[int, str]:
    """Role of each server process: this one and the live pids that wrote metrics are
    workers, their parent (Gunicorn's arbiter, Granian's main process) the master."""
    roles = {pid: WORKER for pid in live | {os.getpid()}}
    roles[os.getppid()] = MASTER
    return roles


def scrape() -> tuple[bytes, str]:
    """``(body, content type)`` of the Prometheus text format for this server, this
    worker's pending observations added first (the others add theirs every half second:
    `api.metrics.batching`)."""
    flush_all()
    directory = os.environ.get(MULTIPROC_DIR)
    if directory and Path(directory).is_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        registry.register(ServerProcesses(server_roles(forget_dead_workers(directory))))
        return generate_latest(registry), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    registry.register(_Default())
    registry.register(ServerProcesses({os.getpid(): SERVER}))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Default:
    """The process's default registry without the client's own unlabelled process
    metrics, which `ServerProcesses` reports labelled."""

    def collect(self) -> Iterable[Metric]:
        return [m for m in REGISTRY.collect() if not m.name.startswith("process_")]
