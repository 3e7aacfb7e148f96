"""Human dates and durations: "2m 13s", "3 hours ago" with the exact time on hover."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.safestring import SafeString

from monitoring.models import Execution

register = template.Library()
LABELS = dict(Execution.Status.choices)


@register.filter
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return " ".join(shown[:2]) or "0s"


@register.filter
def ago(moment: datetime | str | None, now: datetime | None = None) -> SafeString | str:
    if not moment:
        return "—"
    if isinstance(moment, str):
        parsed = parse_datetime(moment)
        if parsed is None:
            return moment
        moment = parsed
    delta = ((now or timezone.now()) - moment).total_seconds()
    text = f"{duration(abs(delta))} ago" if delta >= 0 else f"in {duration(-delta)}"
    exact = timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")
    return format_html('<time datetime="{}" title="{}">{}</time>', moment.isoformat(), exact, text)


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


@register.filter
def status_label(slug: str) -> str:
    return LABELS.get(slug) or slug.replace("_", " ").capitalize()


@register.filter
def timesince_seconds(end: datetime | None, start: datetime | None) -> float | None:
    """Seconds from ``start`` to ``end`` (for ``|duration``), None when either is missing."""
    if end is None or start is None:
        return None
    return max((end - start).total_seconds(), 0.0)
