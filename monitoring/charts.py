"""Geometry for the server-rendered SVG charts (the templates only place what is computed here)."""

from __future__ import annotations

from datetime import datetime
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
    rows: list[dict[str, Any]] = []
    for i, (label, count) in enumerate(counts.items()):
        width = round(300 * count / top, 1)
        rows.append({"label": label, "count": count, "y": i * 18, "w": width, "count_x": width + 74})
    return {"rows": rows, "height": len(rows) * 18}


TIMELINE_WIDTH, TIMELINE_LABEL, TIMELINE_ROW = 960, 240, 20
TIMELINE_ROWS = 200  # bars drawn at most; the grouped list below the drawing has every entry


def execution_timeline(groups: list[dict[str, Any]], *, start: datetime, end: datetime) -> dict[str, Any]:
    """One bar per activity, timer and child workflow over the run's life (``start`` to its close, or
    to now while it runs); a bar still open runs to ``end`` and is marked so."""
    span = max((end - start).total_seconds(), 0.001)
    track = TIMELINE_WIDTH - TIMELINE_LABEL
    rows: list[dict[str, Any]] = []
    for group in [g for g in groups if g["kind"] in ("activity", "timer", "child")][:TIMELINE_ROWS]:
        began = max((group["start"] - start).total_seconds(), 0.0)
        finished = ((group["end"] or end) - start).total_seconds()
        x = TIMELINE_LABEL + track * min(began / span, 1.0)
        width = max(track * max(finished - began, 0.0) / span, 2.0)
        y = len(rows) * TIMELINE_ROW
        rows.append({
            "label": group["name"], "kind": group["kind"], "state": group["state"], "open": group["end"] is None,
            "x": round(x, 1), "w": round(min(width, TIMELINE_WIDTH - x), 1), "y": y, "text_y": y + 14,
            "seconds": max(finished - began, 0.0), "start": group["start"],
        })  # fmt: skip
    return {"rows": rows, "width": TIMELINE_WIDTH, "label": TIMELINE_LABEL, "height": max(len(rows), 1) * TIMELINE_ROW,
            "start": start, "end": end, "cut": len(rows) == TIMELINE_ROWS}  # fmt: skip
