"""The request type views receive once a login is required."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class AuthenticatedRequest(HttpRequest):
    """What a ``@login_required`` (or ``operators_only``, ``staff_only``) view gets: ``user`` is a
    real ``User``, never ``AnonymousUser``, and django-htmx has set ``htmx``. A type for mypy
    only; Django still builds plain requests."""

    user: User
    htmx: HtmxDetails
