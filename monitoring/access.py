"""Who may see monitoring and who may act on workflows."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

OPERATORS_GROUP = "operators"


def can_monitor(user: User | AnonymousUser) -> bool:
    """Members of the operators group, or anyone with ``monitoring.view_monitoring``."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.has_perm("monitoring.view_monitoring"):
        return True
    return user.groups.filter(name=OPERATORS_GROUP).exists()


def can_act(user: User | AnonymousUser) -> bool:
    return can_monitor(user) and user.has_perm("monitoring.act_on_workflows")


def operators_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Login required (anonymous users go to the login page); outsiders get 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not can_monitor(request.user):
            raise PermissionDenied("Monitoring is for operators.")
        return view(request, *args, **kwargs)

    return login_required(wrapper)
