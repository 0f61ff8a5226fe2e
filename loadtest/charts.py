"""The report's charts as SVG geometry: lines over time, and latency bands.

Drawn here rather than by a library, and kept offline: matplotlib would add numpy and
Pillow (tens of MB) to draw a few charts, pygal and the JavaScript libraries (ECharts,
as locust.html uses, Plotly, uPlot) load or inline a script, and the page has none.
Functions return numbers and SVG strings only; ``loadtest/chart.html`` draws any
`time_chart`, so another panel (a server's own metrics, say) is one more call.

A chart over time has what a reader of k6's or Gatling's reports expects: axes labelled
with their units, gridlines at round values, time ticks (m:ss since the start), the active
users on a right-hand axis, the ramp-up shaded, and a tooltip on every sample (SVG
``<title>``: the browser shows it, no script needed).

Latency bands follow Gatling's response time ranges over Locust's histogram of rounded
response times (1 ms steps below 100 ms, 10 ms to 1 s, 100 ms beyond). The histogram
holds failed requests too, so the bands count every request and failures are shown beside.
"""

import math

BANDS = ((100, "< 100 ms", "#2e9e5b"), (500, "100-499 ms", "#e0b43c"))
BANDS += ((1000, "500-999 ms", "#e07b39"), (math.inf, ">= 1000 ms", "#c0392b"))
BAR_WIDTH = 360
# Okabe and Ito's palette, told apart with any colour vision (yellow left out: on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
USERS_COLOR = "#9a9a9a"
FRAME = {"width": 960, "height": 270, "left": 64, "right": 64, "top": 12, "bottom": 44}
# Steps between time ticks, seconds: the first that gives at most MAX_TIME_TICKS ticks.
TIME_STEPS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
MAX_TIME_TICKS = 12
VALUE_TICKS = 5


def latency_bands(response_times: dict) -> list[dict]:
    """``[{"label", "color", "count", "share", "x", "width"}]`` per band: requests whose
    recorded time falls in it, their share, and the band's segment of a bar."""
    counts = [0] * len(BANDS)
    for ms, n in response_times.items():
        counts[next(i for i, (upper, _, _) in enumerate(BANDS) if float(ms) < upper)] += n
    total = sum(counts) or 1
    bands, x = [], 0.0
    for (_, label, color), count in zip(BANDS, counts, strict=True):
        width = BAR_WIDTH * count / total
        bands.append(
            {
                "label": label,
                "color": color,
                "count": count,
                "share": round(100 * count / total, 1),
                "x": round(x, 1),
                "width": round(width, 1),
            }
        )
        x += width
    return bands


def nice_step(span: float, count: int) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^n that cuts ``span`` into at most ``count`` steps."""
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def value_ticks(maximum: float, count: int = VALUE_TICKS) -> list[float]:
    """Round values from 0 to at least ``maximum`` (1 when there is nothing to draw)."""
    maximum = maximum if maximum > 0 else 1
    step = nice_step(maximum, count)
    return [step * i for i in range(math.ceil(maximum / step - 1e-9) + 1)]


def time_ticks(seconds: float) -> list[int]:
    """Seconds from 0 to ``seconds`` at the first of `TIME_STEPS` that gives few enough."""
    step = next((s for s in TIME_STEPS if s * MAX_TIME_TICKS >= seconds), TIME_STEPS[-1])
    return list(range(0, int(seconds) + 1, step))


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour), of the whole seconds elapsed."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def number(value: float) -> str:
    """A tick's or tooltip's value: ``1,250``, ``2.5``, ``0.25``."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def time_chart(
    lines: list[dict],
    *,
    seconds: float,
    unit: str,
    y_label: str,
    users: list[tuple[float, int]] | None = None,
    ramp_up_s: float | None = None,
) -> dict:
    """A chart of ``lines`` over the first ``seconds`` of a run, for ``loadtest/chart.html``.

    ``lines``: ``[{"label", "color", "points": [(t, value or None)]}]``, ``t`` seconds
    into the run (a missing value breaks the line; a lone point is drawn as a dot);
    ``unit``: the values' (``"ms"``); ``users``: ``[(t, active users)]``, drawn dashed on
    a right-hand axis; ``ramp_up_s``: the ramp-up's end, shaded from 0. Returns the frame
    (``width``, ``height``, the plot's ``left``, ``top``, ``right``, ``bottom``), ticks
    (``x_ticks``, ``y_ticks``, ``users_ticks``: ``{"x" or "y", "label"}``), axis labels,
    ``lines`` with their ``paths`` (SVG points), ``users_line``, ``ramp`` (``{"x",
    "width"}``), ``hover`` (``{"x", "width", "title"}`` per sample) and ``legend``.
    """
    left, top = FRAME["left"], FRAME["top"]
    right, bottom = FRAME["width"] - FRAME["right"], FRAME["height"] - FRAME["bottom"]
    seconds = max(seconds, 1)
    values = [v for line in lines for _, v in line["points"] if v is not None]
    y_ticks = value_ticks(max(values, default=0))

    def x_of(t: float) -> float:
        return left + (right - left) * min(max(t, 0), seconds) / seconds

    def y_of(value: float, top_value: float) -> float:
        return bottom - (bottom - top) * value / top_value

    drawn = [
        {**line, "paths": _paths(line["points"], x_of, lambda v: y_of(v, y_ticks[-1]))}
        for line in lines
    ]
    chart = {
        **FRAME,
        "left": left,
        "top": top,
        "right": right,
        "bottom": bottom,
        "plot_width": right - left,
        "plot_height": bottom - top,
        # Where the axis titles go: under the time ticks, and beside each vertical axis.
        "x_label_at": {"x": (left + right) / 2, "y": FRAME["height"] - 6},
        "y_label_at": {"x": 14, "y": (top + bottom) / 2},
        "users_label_at": {"x": FRAME["width"] - 10, "y": (top + bottom) / 2},
        "tick_label_y": bottom + 15,
        "x_label": "time since the start (m:ss)",
        "y_label": f"{y_label} ({unit})" if unit else y_label,
        "x_ticks": [{"x": round(x_of(t), 1), "label": clock(t)} for t in time_ticks(seconds)],
        "y_ticks": [{"y": round(y_of(v, y_ticks[-1]), 1), "label": number(v)} for v in y_ticks],
        "lines": drawn,
        "users_line": None,
        "users_ticks": [],
        "ramp": None,
        "legend": [
            {"label": line["label"], "color": line["color"], "dash": False} for line in lines
        ],
    }
    if users:
        u_ticks = value_ticks(max(count for _, count in users))
        points = [(t, count) for t, count in users]
        chart["users_line"] = {"paths": _paths(points, x_of, lambda v: y_of(v, u_ticks[-1]))}
        chart["users_ticks"] = [
            {"y": round(y_of(v, u_ticks[-1]), 1), "label": number(v)} for v in u_ticks
        ]
        chart["legend"].append(
            {"label": "active users (right axis)", "color": USERS_COLOR, "dash": True}
        )
    if ramp_up_s:
        chart["ramp"] = {"x": left, "width": round(x_of(ramp_up_s) - left, 1)}
    chart["hover"] = _hover(lines, users or [], unit, x_of)
    return chart


def _paths(points: list[tuple], x_of, y_of) -> list[str]:
    """SVG ``points`` strings, one per unbroken run of values."""
    paths, current = [], []
    for t, value in points:
        if value is None:
            if current:
                paths.append(current)
            current = []
        else:
            current.append(f"{x_of(t):.1f},{y_of(value):.1f}")
    if current:
        paths.append(current)
    # A lone point is drawn as a zero-length segment, which the round cap shows as a dot.
    return [" ".join(path * 2 if len(path) == 1 else path) for path in paths]


def _hover(lines: list[dict], users: list[tuple], unit: str, x_of) -> list[dict]:
    """A column per sample time, as wide as halfway to its neighbours, titled with every
    line's value there: the tooltip."""
    by_time: dict[float, list[str]] = {}
    for line in lines:
        for t, value in line["points"]:
            text = "-" if value is None else f"{number(value)} {unit}".rstrip()
            by_time.setdefault(t, []).append(f"{line['label']} {text}")
    for t, count in users:
        by_time.setdefault(t, []).append(f"{count:,} users")
    times = sorted(by_time)
    columns = []
    for i, t in enumerate(times):
        start = x_of((t + times[i - 1]) / 2) if i else x_of(t)
        end = x_of((t + times[i + 1]) / 2) if i + 1 < len(times) else x_of(t)
        columns.append(
            {
                "x": round(start, 1),
                "width": round(max(end - start, 1), 1),
                "title": f"{clock(t)}: " + ", ".join(by_time[t]),
            }
        )
    return columns
