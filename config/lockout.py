"""The page a locked-out username gets: the login page itself, saying why and until when."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

logger = logging.getLogger("tollgate.login")


def login_locked_out(request: HttpRequest, original_response: Any = None, credentials: Any = None) -> HttpResponse:
    """django-axes' AXES_LOCKOUT_CALLABLE, for every attempt on a locked username (the one that locks
    it included). It renders the ordinary login form with a message instead of axes' bare text page.

    The username comes from the form itself: axes' async middleware passes its arguments shifted
    (credentials where the original response belongs), so neither argument is relied on.
    """
    username = request.POST.get("username", "")[:150]
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    failures = getattr(request, "axes_failures_since_start", None)
    if failures is not None:  # this failure is the one that locks the username
        logger.warning("username %r locked for %d minutes after %d failed logins", username, minutes, failures)
    else:
        logger.warning("login refused for username %r: locked after too many failed logins", username)
    message = (
        f"Too many failed logins for “{username}”: this username is locked for {minutes} minutes. "
        "Try again later, or ask an administrator to unlock it."
    )
    form = AuthenticationForm(request, initial={"username": username})
    context = {"form": form, "lockout": message, "next": request.POST.get("next", "")}
    # 429 Too Many Requests: the ordinary page, but scripts can tell a lockout from a wrong password.
    return render(request, "registration/login.html", context, status=429)
