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
    known: bool | None = getattr(user, "_tollgate_can_monitor", None)  # asked again by the layout's nav
    if known is None:
        # The group first: one query for an operator, where the permission check costs two.
        known = user.groups.filter(name=OPERATORS_GROUP).exists() or user.has_perm("monitoring.view_monitoring")
        setattr(user, "_tollgate_can_monitor", known)  # noqa: B010  # on this request's user object only
    return known


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
