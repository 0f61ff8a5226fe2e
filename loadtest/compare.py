"""This run beside another: the previous run in the same folder, a pinned baseline, or the
raw anchor of ``bench/swarm.py``.

A comparison says first whether the two runs were the same test: `differences` lists the
settings that differ (users, spawn rate, run time, access, tags, server, proxy, databases),
since a 1000-user run beside a 200-user one compares the load, not the code. Then the
totals and every request kind: requests/s, p95 and failures with this/other ratios, each
change judged ``better``, ``worse`` or ``same`` (within `SAME_WITHIN`; more requests/s is
better, a higher p95 or more failures worse).
"""

import json
from pathlib import Path

from loadtest.runinfo import REPO
from loadtest.summary import TOTAL, read_stats, summarize

# Where bench/swarm.py leaves its anchor runs (anchor-N/locust.json).
ANCHORS = REPO / "reports" / "bench"

ALL = "all requests"
ANCHOR_TAGS = ["user_id"]  # the anchor swarms lookups by user id only
SAME_WITHIN = 0.05  # a change of 5% or less either way is noise on a shared machine
# (summary key, shown as, whether a higher value is better)
METRICS = (("rps", "requests/s", True), ("p95_ms", "p95 ms", False))
METRICS += (("failures", "failures", False),)
BASELINE_UNREADABLE = "cannot read the baseline {path}: {reason}"


class BaselineError(ValueError):
    """The ``--baseline`` file is missing or is not a run's ``summary.json``."""


def read_baseline(path: Path) -> dict:
    """A run's ``summary.json`` pinned as the baseline; raises `BaselineError`."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BaselineError(BASELINE_UNREADABLE.format(path=path, reason=exc)) from exc
    if not isinstance(summary, dict) or TOTAL not in summary:
        reason = "not a summary.json of manage.py loadtest (no totals)"
        raise BaselineError(BASELINE_UNREADABLE.format(path=path, reason=reason))
    return summary


def settings_of(summary: dict) -> dict[str, str | None]:
    """What makes two runs the same test, as text (None: not recorded)."""
    run = summary.get("run") or {}
    swarm, server = run.get("swarm") or {}, run.get("server") or {}
    tags = swarm.get("tags")
    backends = run.get("backends")
    return {
        "users": _text(summary.get("users") or swarm.get("users")),
        "spawn rate": _text(swarm.get("spawn_rate")),
        "run time": _text(swarm.get("run_time")),
        "access": _text(swarm.get("access")),
        "tags": (", ".join(tags) if tags else "all tasks") if "tags" in swarm else None,
        "server": _text(server.get("name")),
        "proxy": _text(server.get("proxy")),
        "databases": databases(backends) if backends else None,
    }


def _text(value) -> str | None:
    return None if value is None else str(value)


def databases(backends: list[dict]) -> str:
    """``"sqlite"``, or each vendor with its aliases: ``"postgresql (orders, users), sqlite
    (default)"``; replicas are marked."""
    by_vendor: dict[str, list[str]] = {}
    for backend in backends:
        alias = backend["alias"] + (" replica" if backend.get("replica_of") else "")
        by_vendor.setdefault(backend["vendor"], []).append(alias)
    if len(by_vendor) == 1:
        return next(iter(by_vendor))
    return ", ".join(
        f"{vendor} ({', '.join(sorted(a))})" for vendor, a in sorted(by_vendor.items())
    )


def differences(this: dict, other: dict) -> list[dict]:
    """``[{"name", "this", "other"}]``: the settings both runs recorded that differ."""
    mine, theirs = settings_of(this), settings_of(other)
    return [
        {"name": name, "this": mine[name], "other": theirs[name]}
        for name in mine
        if mine[name] is not None and theirs[name] is not None and mine[name] != theirs[name]
    ]


def judged(key: str, name: str, higher_is_better: bool, mine, theirs) -> dict:
    """One metric of two runs: ``{"name", "this", "other", "ratio", "change", "verdict"}``;
    ``change`` as text (``+34%``; for failures the difference), ``verdict`` better, worse,
    same or None when either value is missing."""
    row = {"name": name, "this": mine, "other": theirs, "ratio": None, "change": "-"}
    row["verdict"] = None
    if mine is None or theirs is None:
        return row
    if theirs:
        row["ratio"] = round(mine / theirs, 2)
    if key == "failures":
        row["change"] = f"{mine - theirs:+d}" if mine != theirs else "0"
        row["verdict"] = "same" if mine == theirs else ("better" if mine < theirs else "worse")
        return row
    if not theirs:
        return row
    change = mine / theirs - 1
    row["change"] = f"{100 * change:+.0f}%"
    if abs(change) <= SAME_WITHIN:
        row["verdict"] = "same"
    else:
        row["verdict"] = "better" if (change > 0) == higher_is_better else "worse"
    return row


def figures_rows(this: dict | None, other: dict | None) -> list[dict]:
    """The `METRICS` of two figure sets (a total or a kind; None: absent from that run)."""
    return [
        judged(key, name, better, (this or {}).get(key), (other or {}).get(key))
        for key, name, better in METRICS
    ]


def compared(label: str, this: dict, other: dict, *, settings: bool = True) -> dict:
    """``{"label", "differences", "rows", "kinds"}``: ``rows`` for the totals, ``kinds``
    ``[{"name", "rows"}]`` for every request kind of either run, ``differences`` from
    `differences` (left empty when ``settings`` is False: an anchor is another server)."""
    names = sorted(set(this.get("kinds") or {}) | set(other.get("kinds") or {}))
    return {
        "label": label,
        "differences": differences(this, other) if settings else [],
        "rows": figures_rows(this[TOTAL], other[TOTAL]),
        "kinds": [
            {
                "name": name,
                "rows": figures_rows(this["kinds"].get(name), (other.get("kinds") or {}).get(name)),
            }
            for name in names
        ],
    }


def run_label(kind: str, other: dict) -> str:
    """``previous run (finished, commit, N users)``, or the same for a baseline."""
    run = other.get("run") or {}
    return (
        f"{kind} ({run.get('finished_at', 'time unknown')}, commit {run.get('commit', 'unknown')}, "
        f"{other.get('users')} users)"
    )


def comparisons(
    summary: dict,
    *,
    previous: dict | None,
    tags: list[str] | None,
    baseline: dict | None = None,
    baseline_path: Path | None = None,
) -> list[dict]:
    """This run (``summary``, with its ``run`` facts) beside the pinned ``baseline`` if one
    is given, else beside the ``previous`` run in the folder; and for a lookup-only swarm
    beside the newest anchor run under `ANCHORS`."""
    found = []
    if baseline is not None:
        found.append(compared(run_label(f"baseline {baseline_path}", baseline), summary, baseline))
    elif previous and TOTAL in previous:
        found.append(compared(run_label("previous run", previous), summary, previous))
    anchor = newest_anchor(ANCHORS)
    if anchor and tags == ANCHOR_TAGS:
        label = f"anchor: raw WSGI lookup, bench/swarm.py ({anchor.parent.name}); "
        label += "its RPS counts first to last request"
        other = summarize(read_stats(anchor), users=0)
        found.append(compared(label, summary, other, settings=False))
    return found


def newest_anchor(anchors: Path) -> Path | None:
    """The newest ``locust.json`` of an anchor run left by ``bench/swarm.py``."""
    runs = sorted(anchors.glob("anchor-*/locust.json"), key=lambda path: path.stat().st_mtime)
    return runs[-1] if runs else None
