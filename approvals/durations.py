"""Durations the way people write them: "30m", "4h", "2d", "1d 12h", "1w"."""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
# Ten years: longer than any approval waits, and far from what a timedelta (999,999,999 days) or a
# deadline's datetime (year 9999) can hold, so "99999999999999d" is a form error, not an OverflowError.
MAX_DAYS = 3650
MAX_SECONDS = MAX_DAYS * 86400
_PART = re.compile(r"(\d+)\s*([wdhms])")


def parse_duration(text: str) -> timedelta:
    """Parse "1d 12h" (units w, d, h, m, s; any order; spaces optional)."""
    cleaned = text.strip().lower()
    if not cleaned:
        raise ValueError("Enter a duration such as 30m, 4h, 2d or 1d 12h.")
    if not re.fullmatch(r"(\s*\d+\s*[wdhms]\s*)+", cleaned):
        raise ValueError(f"“{text.strip()}” is not a duration: use numbers with w, d, h, m or s, like 1d 12h.")
    parts = _PART.findall(cleaned)
    if any(len(number.lstrip("0")) > 12 for number, _ in parts):  # beyond the limit whatever the unit
        raise ValueError(f"A duration must be at most {MAX_DAYS} days (ten years).")
    seconds = sum(int(number) * UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError("A duration must be longer than zero.")
    if seconds > MAX_SECONDS:
        raise ValueError(f"A duration must be at most {MAX_DAYS} days (ten years).")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta | int | float | None) -> str:
    """The inverse of ``parse_duration``: 129600 seconds -> "1d 12h"."""
    if value is None:
        return ""
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in UNITS.items():
        if unit == "w" and seconds % size:
            continue  # "10d" reads better than "1w 3d"
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)
