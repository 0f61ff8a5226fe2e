"""The server's side of a run in a few figures, and the bottleneck they point at.

`figures` reduces what Prometheus recorded (``server-metrics.json``, `loadtest.prometheus`)
and what psutil sampled (``processes.json``, `loadtest.sampler`) to the figures of the
steady state (after the ramp-up: the window Prometheus's instant queries covered): the
server's own p50/p95/p99 beside Locust's p95, the database's share of the server's time,
breaker trips, reads on replicas and on primaries, and each process's mean CPU (% of one
core) and memory. ``summary.json`` carries them as ``server_side``.

`bottleneck` names the limit in one sentence, by the first of these rules that holds:

1. ``load generator``: a Locust process used at least `SATURATED_PCT` % of a core: the
   figures are Locust's limit, whatever the server could do.
2. ``breakers``: a store's breaker opened: the store refused work.
3. ``machine``: all cores together were at least `SATURATED_PCT` % busy: CPU is the limit,
   shared by the server, the database and the load generator on one machine; or, when the
   run's own processes account for less than `OURS_PCT` % of that, ``machine, other
   work``: something else on the machine took the CPU.
4. ``server CPU``: the server's workers used at least `SATURATED_PCT` % of a core each.
5. ``database``: the database took at least `DATABASE_SHARE_PCT` % of the server's time,
   or a PostgreSQL process used at least `SATURATED_PCT` % of a core.
6. ``queueing``: Locust's p95 is at least `QUEUEING_RATIO` times the server's and
   `QUEUEING_MIN_MS` ms above it: requests wait in front of the server's workers (nginx,
   the listen queue), not in them.
7. ``none``: nothing above: nothing saturated at this load.

The thresholds are round figures, not fitted ones: a process near a whole core cannot go
faster by being given more work; the database past half the server's time outweighs
everything else the server does.
"""

from statistics import fmean

SATURATED_PCT = 90
DATABASE_SHARE_PCT = 50
QUEUEING_RATIO = 2
QUEUEING_MIN_MS = 20
OURS_PCT = 50
MB = 1024 * 1024
SERVER_ROLES = ("gunicorn", "granian")
# Who shares the machine, as the machine rule names them: (label, role prefix).
SHARES = (("server", SERVER_ROLES), ("PostgreSQL", "postgresql"), ("Locust", "locust"))
SHARES += (("nginx", "nginx"),)


def _one(results: list[dict] | None) -> float | None:
    """The value of a query that answers one series (no labels); None when it has none."""
    values = [item["value"] for item in results or [] if item["value"] is not None]
    return values[0] if values else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else round(100 * fraction, 1)


def is_replica(alias: str) -> bool:
    """Replica aliases are ``<store>_replicaN`` (the metrics contract)."""
    return "_replica" in alias


def reads(results: list[dict] | None) -> dict:
    """Queries on replicas and on primaries (``default`` left out: the tokens' store) and
    the replicas' share, %, from queries by alias."""
    by_alias = {item["labels"].get("alias", ""): item["value"] or 0 for item in results or []}
    replica = sum(n for alias, n in by_alias.items() if is_replica(alias))
    primary = sum(
        n for alias, n in by_alias.items() if not is_replica(alias) and alias != "default"
    )
    both = replica + primary
    return {
        "by_alias": {alias: round(n) for alias, n in sorted(by_alias.items())},
        "replica": round(replica),
        "primary": round(primary),
        "replica_share_pct": round(100 * replica / both, 1) if both else None,
    }


def breaker_name(labels: dict) -> str:
    """``users read``: a breaker's store and the access it guards (label ``access``)."""
    return f"{labels.get('store', '-')} {labels.get('access', '')}".strip()


def server_role(labels: dict, server: str) -> str:
    """``gunicorn worker`` for a server process Prometheus scraped (label role)."""
    return f"{server} {labels.get('role') or 'process'}"


def processes(
    collected: dict | None, sampled: dict | None, *, start: float, end: float, server: str
) -> list[dict]:
    """Each process's mean CPU (% of one core) and RSS (MB) from ``start`` to ``end``
    (Unix seconds): the server's from Prometheus when it recorded them (``source``
    ``prometheus``), the others, and the server's when it did not, from psutil. Sorted by
    CPU, busiest first."""
    found = []
    scraped = ((collected or {}).get("window") or {}).get("results", {}).get("cpu_by_process")
    rss = {}
    for series in (
        ((collected or {}).get("ranges") or {}).get("rss_by_process", {}).get("series", [])
    ):
        values = [v for t, v in series["values"] if start <= t <= end and v is not None]
        if values:
            rss[series["labels"].get("pid")] = fmean(values)
    for item in scraped or []:
        labels = item["labels"]
        found.append(
            {
                "role": server_role(labels, server),
                "pid": int(labels.get("pid") or 0),
                "cpu_pct": _pct(item["value"]),
                "rss_mb": round(rss[labels.get("pid")] / MB, 1)
                if labels.get("pid") in rss
                else None,
                "source": "prometheus",
            }
        )
    for series in (sampled or {}).get("processes", []):
        if scraped and series["role"].startswith(SERVER_ROLES):
            continue
        points = [p for p in series["points"] if start <= p[0] <= end]
        cpu = [p[1] for p in points if p[1] is not None]
        memory = [p[-1] for p in points if p[-1] is not None]  # PSS where sampled
        if not points:
            continue
        found.append(
            {
                "role": series["role"],
                "pid": series["pid"],
                "cpu_pct": round(fmean(cpu), 1) if cpu else None,
                "rss_mb": round(fmean(memory) / MB, 1) if memory else None,
                "source": "psutil",
            }
        )
    return sorted(found, key=lambda p: -(p["cpu_pct"] or 0))


def by_role(found: list[dict]) -> dict:
    """Per role: processes, their CPU together and the busiest one's (% of one core)."""
    roles: dict[str, dict] = {}
    for process in found:
        role = roles.setdefault(
            process["role"], {"processes": 0, "cpu_pct": 0.0, "max_cpu_pct": 0.0}
        )
        role["processes"] += 1
        role["cpu_pct"] = round(role["cpu_pct"] + (process["cpu_pct"] or 0), 1)
        role["max_cpu_pct"] = max(role["max_cpu_pct"], process["cpu_pct"] or 0)
    return roles


def figures(summary: dict, collected: dict | None, sampled: dict | None) -> dict:
    """``summary.json``'s ``server_side``: see the module's docstring. ``summary``: the
    Locust side (`loadtest.summary.summarize`, with ``run``); ``collected``:
    `loadtest.prometheus.collect`'s (None: Prometheus was not asked); ``sampled``:
    `loadtest.sampler.Sampler.result` (None: not sampled)."""
    collected = collected or {}
    window = collected.get("window") or {}
    results = window.get("results") or {}
    run_results = (collected.get("run") or {}).get("results") or {}
    steady = summary.get("steady")
    locust = steady["total"] if steady else summary["total"]
    span = summary["window"]
    start = window.get("start") or (span["start"] + (steady["start_s"] if steady else 0))
    end = window.get("end") or span["end"]
    server = (summary.get("run") or {}).get("server", {}).get("name") or "server"
    found = processes(collected, sampled, start=start, end=end, server=server)
    machine = [cpu for t, cpu in (sampled or {}).get("machine", []) if start <= t <= end]
    trips = run_results.get("breaker_trips") or []
    available = bool(collected.get("available"))
    scraped = collected.get("prometheus") or {}
    return {
        "available": available,
        "reason": None if available else collected.get("reason") or "Prometheus was not run.",
        "prometheus": {key: scraped.get(key) for key in ("version", "targets")},
        "window": {"start_s": round(start - span["start"], 1), "seconds": round(end - start, 1)},
        "server_p50_ms": _ms(_one(results.get("p50"))),
        "server_p95_ms": _ms(_one(results.get("p95"))),
        "server_p99_ms": _ms(_one(results.get("p99"))),
        "server_mean_ms": _ms(_one(results.get("mean_seconds"))),
        "client_p95_ms": locust["p95_ms"],
        "requests_by_status": {
            item["labels"].get("status", ""): round(item["value"] or 0)
            for item in run_results.get("requests_by_status") or []
        },
        "db_time_share_pct": _pct(_one(results.get("db_time_share"))),
        "breaker_trips": round(sum(item["value"] or 0 for item in trips)),
        "breakers_tripped": sorted(
            breaker_name(item["labels"]) for item in trips if (item["value"] or 0) >= 0.5
        ),
        "reads": reads(run_results.get("queries_by_alias")),
        "cores": (sampled or {}).get("cores"),
        "machine_cpu_pct": round(fmean(machine), 1) if machine else None,
        "processes": found,
        "roles": by_role(found),
    }


def _busiest(found: list[dict], prefix: str) -> dict | None:
    chosen = [p for p in found if p["role"].startswith(prefix) and p["cpu_pct"] is not None]
    return max(chosen, key=lambda p: p["cpu_pct"], default=None)


def _role_share(roles: dict, prefix: str) -> float:
    return round(sum(r["cpu_pct"] for name, r in roles.items() if name.startswith(prefix)))


def bottleneck(figures: dict) -> dict:
    """``{"rule", "sentence"}``: the first rule of the module's list that ``figures``
    (`figures`) meet."""
    found = figures["processes"]
    locust = _busiest(found, "locust")
    if locust and locust["cpu_pct"] >= SATURATED_PCT:
        return _said(
            "load generator",
            f"Locust used {locust['cpu_pct']:.0f}% of a core ({locust['role']}): the load "
            "generator is the limit, not the server.",
        )
    if figures["breaker_trips"]:
        stores = ", ".join(figures["breakers_tripped"]) or "a store"
        return _said(
            "breakers",
            f"Breakers opened {figures['breaker_trips']} time"
            f"{'s' * (figures['breaker_trips'] != 1)} ({stores}): a store refused work, "
            "and its requests failed fast.",
        )
    machine = figures.get("machine_cpu_pct")
    if machine is not None and machine >= SATURATED_PCT:
        roles = figures["roles"]
        shares = ", ".join(
            f"{label} {_role_share(roles, prefix)}%"
            for label, prefix in SHARES
            if any(name.startswith(prefix) for name in roles)
        )
        cores = figures["cores"] or 1
        ours = sum(role["cpu_pct"] for role in roles.values())
        if ours < OURS_PCT / 100 * machine * cores:
            return _said(
                "machine, other work",
                f"The machine's {cores} cores were {machine:.0f}% busy but this run's "
                f"processes used {ours:.0f}% of a core ({shares}): other work on the "
                "machine was the limit.",
            )
        return _said(
            "machine",
            f"The machine's {cores} cores were {machine:.0f}% busy ({shares} of a core): "
            "CPU is the limit, shared by everything the run started on one machine.",
        )
    workers = [
        p for p in found if p["role"].endswith("worker") and p["role"].startswith(SERVER_ROLES)
    ]
    mean = fmean(p["cpu_pct"] or 0 for p in workers) if workers else 0
    if workers and mean >= SATURATED_PCT:
        return _said(
            "server CPU",
            f"The {len(workers)} server workers used {mean:.0f}% of a core each: the "
            "server's CPU is the limit.",
        )
    share = figures.get("db_time_share_pct")
    postgres = _busiest(found, "postgresql")
    if (share is not None and share >= DATABASE_SHARE_PCT) or (
        postgres and postgres["cpu_pct"] >= SATURATED_PCT
    ):
        said = f"Database time was {share:.0f}% of the server's time" if share is not None else ""
        if postgres and postgres["cpu_pct"] >= SATURATED_PCT:
            said += (" and a" if said else "A") + (
                f" PostgreSQL process used {postgres['cpu_pct']:.0f}% of a core"
            )
        return _said("database", f"{said}: the database is the limit.")
    server, client = figures.get("server_p95_ms"), figures.get("client_p95_ms")
    if (
        server is not None
        and client is not None
        and client >= QUEUEING_RATIO * server
        and client - server >= QUEUEING_MIN_MS
    ):
        return _said(
            "queueing",
            f"The server answered in {server:.0f} ms at p95 but Locust waited {client:.0f} ms: "
            "requests queue in front of the server's workers (nginx, the listen queue), "
            "not in them.",
        )
    if not figures["available"]:
        return _said(
            "none",
            f"No process the run sampled reached {SATURATED_PCT}% of a core; without "
            "Prometheus the server's own time is unknown.",
        )
    close = (
        f" and Locust's p95 ({client:.0f} ms) is not far above the server's ({server:.0f} ms)"
        if server is not None and client is not None
        else ""
    )
    return _said(
        "none",
        f"No process reached {SATURATED_PCT}% of a core{close}: nothing saturated at this load.",
    )


def _said(rule: str, sentence: str) -> dict:
    return {"rule": rule, "sentence": sentence}
