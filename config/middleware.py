"""htmx and expired sessions: send the whole page to the login form, not a region; the viewer's time zone."""

import functools
import zoneinfo
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.utils import timezone
from django_htmx.http import HttpResponseClientRedirect


class HtmxLoginRedirectMiddleware:
    """A live region re-fetching after the session expired would otherwise
    follow the redirect and swap the login page into itself."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.login_url = resolve_url(settings.LOGIN_URL)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        is_htmx = request.headers.get("HX-Request") == "true"
        if is_htmx and response.status_code == 302 and response.get("Location", "").startswith(self.login_url):
            return HttpResponseClientRedirect(response["Location"])
        return response


TZ_COOKIE = "tollgate_tz"


@functools.lru_cache(maxsize=128)
def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    """The IANA zone the browser named, or None for anything else (a forged or stale cookie)."""
    if not name or len(name) > 64:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


class ViewerTimezoneMiddleware:
    """Times in the viewer's own time zone: ``static/js/timezone.js`` puts the browser's zone
    (``Intl.DateTimeFormat().resolvedOptions().timeZone``) in a cookie on every page, the login page
    included, and each request activates it. Without the cookie (the very first page, or a client
    without JavaScript) times are in ``TIME_ZONE``, and they always say which zone they are in."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        zone = _zone(request.COOKIES.get(TZ_COOKIE, ""))
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
