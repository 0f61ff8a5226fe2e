"""The report's charts as inline SVG geometry: latency bands and lines over time.

Drawn here rather than by a library: the two shapes (a stacked bar, a few lines over
time) take a few dozen lines, where pygal's default output loads its JavaScript from a
CDN and matplotlib is a heavy dependency for two charts. Functions return numbers and
SVG ``points`` strings only; ``loadtest/templates/loadtest/report.html`` draws them.

Latency bands follow Gatling's response time ranges over Locust's histogram of rounded
response times (1 ms steps below 100 ms, 10 ms to 1 s, 100 ms beyond). The histogram
holds failed requests too, so the bands count every request and failures are shown beside.
"""

import math

BANDS = ((100, "< 100 ms", "#2e9e5b"), (500, "100-499 ms", "#e0b43c"))
BANDS += ((1000, "500-999 ms", "#e07b39"), (math.inf, ">= 1000 ms", "#c0392b"))
BAR_WIDTH = 360
CHART = {"width": 460, "height": 140, "left": 48, "right": 10, "top": 10, "bottom": 20}


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


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^n at or above ``value`` (1 for nothing to draw)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def line_chart(rows: list[dict], lines: list[tuple[str, str, str]]) -> dict:
    """A chart of ``rows`` (each with ``t``, seconds into the run, and a value per key)
    for ``lines`` of ``(key, label, color)``: axes' maxima and each line's polylines
    (a missing value breaks its line; a lone point is a polyline of it twice)."""
    plot_w = CHART["width"] - CHART["left"] - CHART["right"]
    plot_h = CHART["height"] - CHART["top"] - CHART["bottom"]
    x_max = max((row["t"] for row in rows), default=0) or 1
    values = [row[key] for row in rows for key, _, _ in lines if row[key] is not None]
    y_max = nice_ceiling(max(values, default=0))

    def point(row: dict, key: str) -> str:
        x = CHART["left"] + plot_w * row["t"] / x_max
        y = CHART["top"] + plot_h * (1 - row[key] / y_max)
        return f"{x:.1f},{y:.1f}"

    drawn = []
    for key, label, color in lines:
        paths, current = [], []
        for row in rows:
            if row[key] is not None:
                current.append(point(row, key))
            elif current:
                paths.append(current)
                current = []
        if current:
            paths.append(current)
        # A lone point is drawn as a zero-length segment, which the round cap shows as a dot.
        paths = [path * 2 if len(path) == 1 else path for path in paths]
        drawn.append({"label": label, "color": color, "paths": [" ".join(p) for p in paths]})
    return {
        **CHART,
        "plot_right": CHART["width"] - CHART["right"],
        "plot_bottom": CHART["height"] - CHART["bottom"],
        "x_max": x_max,
        "y_max": y_max,
        "lines": drawn,
    }
