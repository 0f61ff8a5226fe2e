"""Pass or fail for a load test run: thresholds, k6-style, and Locust's own CPU warning.

`thresholds` judges the run's totals against its limits: no failed request, always; p95 at
most ``--p95-ms``; at least ``--min-rps`` requests per second. Each threshold is reported
pass or fail, and `breaches` names the failed ones for the command's error. `cpu_warning`
finds Locust's complaint that its own process ran out of CPU in its log: the figures are
then the load generator's limit, not the server's.
"""

from pathlib import Path

FAILURES_BREACHED = "{actual} failed requests (allowed: 0)"
P95_BREACHED = "p95 {actual} ms above --p95-ms {limit}"
MIN_RPS_BREACHED = "{actual} requests/s below --min-rps {limit}"
# Locust's log lines (locust/runners.py, 2.x) when a process passed 90% CPU.
CPU_WARNINGS = (
    "CPU usage above",
    "CPU usage was too high",
    "CPU usage threshold was exceeded on workers",
    "exceeded cpu threshold",
)


def thresholds(total: dict, *, p95_ms: float | None, min_rps: float | None) -> list[dict]:
    """One ``{"name", "limit", "actual", "passed", "breach"}`` per threshold set;
    ``breach`` is the error text, None for a threshold that passed."""
    failures = total["failures"]
    checked = [_check("failures", "= 0", failures, failures == 0, FAILURES_BREACHED, 0)]
    if p95_ms is not None:
        p95 = total["p95_ms"]
        checked.append(_check("p95 ms", "<=", p95, p95 <= p95_ms, P95_BREACHED, p95_ms))
    if min_rps is not None:
        rps = total["rps"]
        checked.append(_check("requests/s", ">=", rps, rps >= min_rps, MIN_RPS_BREACHED, min_rps))
    return checked


def _check(name: str, compare: str, actual, passed: bool, breach: str, limit: float) -> dict:
    limit_text = f"{limit:.0f}" if float(limit).is_integer() else str(limit)
    return {
        "name": name,
        "limit": compare if compare == "= 0" else f"{compare} {limit_text}",
        "actual": actual,
        "passed": passed,
        "breach": None if passed else breach.format(actual=actual, limit=limit_text),
    }


def breaches(checked: list[dict]) -> list[str]:
    """The error text of every threshold that failed."""
    return [check["breach"] for check in checked if not check["passed"]]


def cpu_warning(log: Path) -> str | None:
    """The first line of Locust's ``log`` saying it ran out of CPU; None if none did."""
    if not Path(log).exists():
        return None
    for line in Path(log).read_text(errors="replace").splitlines():
        if any(warning in line for warning in CPU_WARNINGS):
            return line.strip()
    return None
