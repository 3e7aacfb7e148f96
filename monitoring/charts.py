"""Geometry for the server-rendered SVG charts (the templates only place what is computed here)."""

from __future__ import annotations

from typing import Any

WIDTH, HEIGHT, PAD = 720, 160, 28


def throughput_chart(series: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars for closed runs per bucket, a line for the failure rate (0-100 % on the same height)."""
    n = max(len(series), 1)
    top = max((p["closed"] for p in series), default=0) or 1
    slot = (WIDTH - PAD) / n
    bars, points = [], []
    for i, point in enumerate(series):
        height = (HEIGHT - PAD) * point["closed"] / top
        x = PAD + i * slot
        bars.append({"x": round(x + 1, 1), "y": round(HEIGHT - PAD - height, 1), "w": round(max(slot - 2, 1), 1),
                     "h": round(height, 1), "closed": point["closed"], "failed": point["failed"],
                     "start": point["start"]})  # fmt: skip
        if point["failure_rate"] is not None:
            y = HEIGHT - PAD - (HEIGHT - PAD) * point["failure_rate"]
            points.append(f"{x + slot / 2:.1f},{y:.1f}")
    return {"width": WIDTH, "height": HEIGHT, "pad": PAD, "top": top, "bars": bars, "line": " ".join(points),
            "baseline": HEIGHT - PAD}  # fmt: skip


def histogram(counts: dict[str, int]) -> dict[str, Any]:
    """Horizontal bars, one per duration bucket."""
    top = max(counts.values(), default=0) or 1
    rows = []
    for i, (label, count) in enumerate(counts.items()):
        width = round(300 * count / top, 1)
        rows.append({"label": label, "count": count, "y": i * 18, "w": width, "count_x": width + 74})
    return {"rows": rows, "height": len(rows) * 18}
