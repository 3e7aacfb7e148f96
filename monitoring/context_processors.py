from typing import Any

from django.http import HttpRequest

from monitoring.access import can_monitor


def monitoring_nav(request: HttpRequest) -> dict[str, Any]:
    """Whether to show the Monitoring link: evaluated only if a template uses it."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"can_monitor": lambda: can_monitor(user)}
