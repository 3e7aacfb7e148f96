"""htmx and expired sessions: send the whole page to the login form, not a region."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
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
