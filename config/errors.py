"""A plain 500 page: no traceback ever reaches a user, and it needs no database."""

from django.http import HttpRequest, HttpResponse
from django.template import loader


def server_error(request: HttpRequest) -> HttpResponse:
    try:
        body = loader.get_template("500.html").render({})
    except Exception:  # the template system itself may be what broke
        body = "<h1>Something went wrong</h1><p>The error is logged. Your data is safe; please try again.</p>"
    return HttpResponse(body, status=500)
