"""Process health (``/healthz``) and readiness (``/readyz``) for load balancers."""

from django.db import connection
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET

from workflows import client as temporal


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    problems = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any driver error means "not ready"
        problems.append(f"database: {exc.__class__.__name__}: {exc}".strip())
    try:
        temporal.run(temporal.ping)
    except temporal.TemporalError as exc:
        problems.append(f"temporal: {exc}")
    if problems:
        return JsonResponse({"status": "unavailable", "problems": problems}, status=503)
    return JsonResponse({"status": "ok"})


def home(request: HttpRequest) -> HttpResponseRedirect:
    return redirect("approvals:inbox")
