"""Who may open what, generated from the URL configuration (issue 12, "Keep it true").

Every route Django resolves (``get_resolver()``, walked recursively) is requested by every role of
the cast, with GET and with a POST of an empty body (the access check is the point, not the form),
and the status must be the one written in ``EXPECTED`` below. A route missing from the table fails
the test ("new route X: add its expected status per role"), so a new view cannot ship without
someone deciding, in writing, who may open it.

The admin site (``/admin/``) is Django's own: its index and two model pages are checked, the rest
of its routes are skipped (they share the admin's one ``has_permission`` check). The websocket
(``/ws/live/``) is routed by the ASGI router, not the URLconf: tests/config/test_websocket_origin.py
and tests/approvals/test_live.py cover who may connect.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from approvals.models import ApprovalTask, Policy, TaskAssignment
from config.ports import free_port
from monitoring.models import Execution

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "alice", "bob", "carol", "dave", "operator", "admin")
LOGIN = "login"  # 302 to the login page
ADMIN_LOGIN = "admin-login"  # 302 to the admin's login page
OUTSIDE = "203.0.113.9"  # a documentation address: never in MONITORING_METRICS_ALLOWED_IPS


def row(default: int | str, **roles: int | str) -> dict[str, int | str]:
    """One method's expected answer per role: ``default`` for every signed-in role not named;
    anonymous visitors go to the login page unless named."""
    unknown = set(roles) - set(ROLES)
    assert not unknown, unknown
    return {"anonymous": LOGIN, **{role: default for role in ROLES[1:]}, **roles}


def public(code: int | str) -> dict[str, int | str]:
    return {role: code for role in ROLES}


SIGNED_IN_PAGE = row(200)  # any signed-in user, about themselves
NOT_POST = row(405)  # GET-only views answer a POST with 405 once the login check passed
NOT_GET = row(405)
MONITORING = row(403, operator=200, admin=200)
MONITORING_NOT_POST = row(403, operator=405, admin=405)
POLICY_ADMIN_GET = row(403, admin=200)
POLICY_ADMIN_NOT_GET = row(403, admin=405)

# route (as the URLconf writes it) -> method -> role -> status. Written from the roles in
# ARCHITECTURE.md: everything needs a login; approvers see their tasks, outsiders get 404 on a
# task that is not theirs; operators see monitoring and every task; admins manage policies.
EXPECTED: dict[str, dict[str, dict[str, int | str]]] = {
    # Health for load balancers; readiness says 503 here because Temporal is unreachable by design.
    "": {"GET": public(302), "POST": public(302)},
    "healthz": {"GET": public(200), "POST": public(405)},
    "readyz": {"GET": public(503), "POST": public(405)},
    # Signed-in users are sent on from the login page; everyone may log out (POST only).
    "accounts/login/": {
        "GET": {**row(302), "anonymous": 200},
        "POST": {**row(302), "anonymous": 200},  # the empty form again, with its errors
    },
    "accounts/logout/": {"GET": {**row(405), "anonymous": 405}, "POST": public(LOGIN)},  # then the login page
    # Reference workflows: any signed-in user may start one (an empty form is refused, 422).
    "approvals/start/": {"GET": SIGNED_IN_PAGE, "POST": NOT_POST},
    "approvals/start/<slug:kind>/": {"GET": NOT_GET, "POST": row(422)},
    # Inbox and the user's own lists.
    "approvals/": {"GET": SIGNED_IN_PAGE, "POST": NOT_POST},
    # An empty POST is no submission (``Form(request.POST or None)``): the blank form again, 200.
    "approvals/new/": {"GET": SIGNED_IN_PAGE, "POST": SIGNED_IN_PAGE},
    "approvals/count/": {"GET": SIGNED_IN_PAGE, "POST": NOT_POST},
    "approvals/decisions/": {"GET": SIGNED_IN_PAGE, "POST": NOT_POST},
    "approvals/requests/": {"GET": SIGNED_IN_PAGE, "POST": NOT_POST},
    "approvals/away/": {"GET": SIGNED_IN_PAGE, "POST": SIGNED_IN_PAGE},
    "approvals/settings/": {"GET": SIGNED_IN_PAGE, "POST": SIGNED_IN_PAGE},
    # A mailed Approve/Reject link needs no login: the signed token names its recipient. One that is
    # not valid is refused for everyone (tests/approvals/test_mail_refusals.py has the valid ones).
    "approvals/mail/<str:token>/": {"GET": public(400), "POST": public(400)},
    # Saved inbox views are each user's own: saving an empty name is refused with a message (302 back
    # to the inbox); removing a view that is not yours (here: no view has the task's id) is 404.
    "approvals/views/": {"GET": NOT_GET, "POST": row(302)},
    "approvals/views/<int:pk>/delete/": {"GET": NOT_GET, "POST": row(404)},
    # Bulk decisions: an empty one is refused with a message (302 back to the inbox); a run's results
    # are its owner's only (a run nobody started: 404); its progress says "Starting…" until it exists.
    "approvals/bulk/": {"GET": NOT_GET, "POST": row(302)},
    "approvals/bulk/<uuid:pk>/": {"GET": row(404), "POST": NOT_POST},
    "approvals/bulk/<uuid:pk>/progress/": {"GET": SIGNED_IN_PAGE, "POST": NOT_POST},
    # alice's task, assigned to bob's group at level 1: carol (level 2, not reached) and dave see
    # nothing (404, not 403: no hint that it exists); operators and admins see every task.
    "approvals/<int:pk>/": {"GET": row(200, carol=404, dave=404), "POST": row(405)},
    # Deciding: the requester may not decide her own request (403); bob, the operator and the admin
    # reach the form, which refuses an empty decision (422); an operator or admin who is no
    # assignee is then told the task is not assigned to them (tests/approvals/test_views.py).
    "approvals/<int:pk>/decide/": {"GET": row(405), "POST": row(422, alice=403, carol=404, dave=404)},
    # "I'm on it": whoever sees the task is answered (302 back to it, with a refusal when they may not
    # decide it: the requester, an operator or admin who is no assignee); the others get 404.
    "approvals/<int:pk>/claim/": {"GET": row(405), "POST": row(302, carol=404, dave=404)},
    # Withdrawing: the requester only (302 back, here told Temporal cannot be reached); whoever else
    # sees the task is refused (403), the others get 404.
    # Questions and answers: the requester and the approvers (302 back; an empty one with a message);
    # operators and admins, who see every task, are no party to it (403).
    "approvals/<int:pk>/comment/": {"GET": row(405), "POST": row(302, operator=403, admin=403, carol=404, dave=404)},
    "approvals/<int:pk>/withdraw/": {"GET": row(405), "POST": row(403, alice=302, carol=404, dave=404)},
    # Escalation policies and routing rules: staff admins only.
    "approvals/policies/": {"GET": POLICY_ADMIN_GET, "POST": POLICY_ADMIN_NOT_GET},
    "approvals/policies/new/": {"GET": POLICY_ADMIN_GET, "POST": row(403, admin=422)},
    "approvals/policies/<int:pk>/": {"GET": POLICY_ADMIN_GET, "POST": POLICY_ADMIN_NOT_GET},
    "approvals/policies/<int:pk>/edit/": {"GET": POLICY_ADMIN_GET, "POST": row(403, admin=422)},
    "approvals/policies/<int:pk>/duplicate/": {"GET": POLICY_ADMIN_NOT_GET, "POST": row(403, admin=302)},
    "approvals/policies/<int:pk>/retire/": {"GET": POLICY_ADMIN_NOT_GET, "POST": row(403, admin=302)},
    "approvals/policies/<int:pk>/push/": {"GET": POLICY_ADMIN_NOT_GET, "POST": row(403, admin=302)},
    "approvals/routing/": {"GET": POLICY_ADMIN_GET, "POST": POLICY_ADMIN_GET},
    # Monitoring: the operators group (and the superuser admin).
    "monitoring/": {"GET": MONITORING, "POST": MONITORING_NOT_POST},
    "monitoring/executions/": {"GET": MONITORING, "POST": MONITORING_NOT_POST},
    "monitoring/retries/": {"GET": MONITORING, "POST": MONITORING_NOT_POST},
    "monitoring/stuck/": {"GET": MONITORING, "POST": MONITORING_NOT_POST},
    "monitoring/pending/": {"GET": MONITORING, "POST": MONITORING_NOT_POST},
    "monitoring/trends/": {"GET": MONITORING, "POST": MONITORING_NOT_POST},
    "monitoring/^executions/(?P<workflow_id>.+)/(?P<run_id>[0-9A-Za-z-]{1,64})/$": {
        "GET": MONITORING,
        "POST": MONITORING_NOT_POST,
    },
    # Acting needs monitoring.act_on_workflows: an empty action is refused with a message (302 back).
    "monitoring/^executions/(?P<workflow_id>.+)/(?P<run_id>[0-9A-Za-z-]{1,64})/act/$": {
        "GET": MONITORING_NOT_POST,
        "POST": row(403, operator=302, admin=302),
    },
    # The queries a run declares (loaded by htmx) and running one: operators only; an empty query
    # name is refused (400).
    "monitoring/^executions/(?P<workflow_id>.+)/(?P<run_id>[0-9A-Za-z-]{1,64})/queries/$": {
        "GET": MONITORING,
        "POST": MONITORING_NOT_POST,
    },
    "monitoring/^executions/(?P<workflow_id>.+)/(?P<run_id>[0-9A-Za-z-]{1,64})/query/$": {
        "GET": MONITORING_NOT_POST,
        "POST": row(403, operator=400, admin=400),
    },
    # Ready filters (an htmx partial): operators. Batch actions need monitoring.act_on_workflows: a
    # preview without a query is 400, an empty batch form 400; the job pages only watch (Temporal is
    # unreachable here: 503 for a job, the list says so with 200).
    "monitoring/ready-filters/": {"GET": MONITORING, "POST": MONITORING_NOT_POST},
    "monitoring/batch/": {"GET": row(403, operator=400, admin=400), "POST": MONITORING_NOT_POST},
    "monitoring/batch/run/": {"GET": MONITORING_NOT_POST, "POST": row(403, operator=400, admin=400)},
    "monitoring/batch/jobs/": {"GET": MONITORING, "POST": MONITORING_NOT_POST},
    "monitoring/batch/jobs/<str:job_id>/": {"GET": row(403, operator=503, admin=503), "POST": MONITORING_NOT_POST},
    # Prometheus: a bearer token or an allowed address, never a login (this test's address is not allowed).
    "metrics": {"GET": public(403), "POST": public(405)},
    # Django's admin: staff only; its own login page for everyone else.
    "admin/": {"GET": {**row(ADMIN_LOGIN, admin=200), "anonymous": ADMIN_LOGIN}, "POST": {}},
    "admin/approvals/policy/": {"GET": {**row(ADMIN_LOGIN, admin=200), "anonymous": ADMIN_LOGIN}, "POST": {}},
    "admin/auth/user/": {"GET": {**row(ADMIN_LOGIN, admin=200), "anonymous": ADMIN_LOGIN}, "POST": {}},
}
ADMIN_CHECKED = {"admin/", "admin/approvals/policy/", "admin/auth/user/"}


def routes() -> list[str]:
    """Every route of the URLconf, as written (prefixes joined), depth first."""
    found: list[str] = []

    def walk(resolver: URLResolver, prefix: str) -> None:
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                walk(entry, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                found.append(prefix + str(entry.pattern))

    walk(get_resolver(), "")
    return found


def admin_route(route: str) -> bool:
    return route.startswith("admin/")


def path_for(route: str, ids: dict[str, str]) -> str:
    """The route with its parameters filled from real rows."""
    if route.startswith("admin/"):
        return "/" + route
    if "<int:pk>" in route:
        pk = ids["policy"] if route.startswith("approvals/policies/") else ids["task"]
        route = route.replace("<int:pk>", pk)
    route = route.replace("<slug:kind>", "order").replace("<str:token>", "not-a-signed-link")
    route = route.replace("<str:job_id>", "tollgate-batch-0")
    route = route.replace("<uuid:pk>", "5f0c3d3e-9a4e-4c4b-8a53-2f1f5b7c1d2e")
    if "(?P<workflow_id>" in route:
        tail = next((f"{end}/" for end in ("act", "queries", "query") if route.endswith(f"/{end}/$")), "")
        route = f"monitoring/executions/{ids['workflow_id']}/{ids['run_id']}/{tail}"
    assert "<" not in route and "(?P" not in route, f"fill the parameters of {route}"
    return "/" + route


@pytest.fixture
def ids(cast: dict[str, Any], settings: Any) -> dict[str, str]:
    """alice's pending task for the approvers group, the standard policy and a snapshot row of
    the task's workflow; Temporal unreachable so pages that call it answer at once."""
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"
    token = uuid.uuid4().hex[:10]
    policy = Policy.objects.get(slug="standard")
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{token}", run_id="run-1", request_id=token, title="Buy a laptop",
        status=ApprovalTask.Status.PENDING, due_at=timezone.now() + timedelta(days=1), requested_by="alice",
        requester=cast["alice"], policy=policy,
    )  # fmt: skip
    TaskAssignment.objects.create(task=task, level=1, group=Group.objects.get(name="approvers"))
    Execution.objects.create(
        workflow_id=task.workflow_id, run_id="run-1", workflow_type="ApprovalWorkflow", status="Running",
        task_queue="approvals", start_time=timezone.now(),
    )  # fmt: skip
    return {"task": str(task.pk), "policy": str(policy.pk), "workflow_id": task.workflow_id, "run_id": "run-1"}


def observed(response: Any) -> int | str:
    location = response.get("Location", "")
    if response.status_code == 302 and location.startswith("/admin/login/"):
        return ADMIN_LOGIN
    if response.status_code == 302 and location.startswith("/accounts/login/"):
        return LOGIN
    return int(response.status_code)


def test_every_route_is_in_the_expectation_table() -> None:
    new = [route for route in routes() if route not in EXPECTED and not admin_route(route)]
    assert not new, "\n".join(f"new route {route}: add its expected status per role" for route in new)
    gone = [route for route in EXPECTED if route not in routes()]
    assert not gone, f"routes in the table that the URLconf no longer has: {gone}"


def test_every_route_answers_every_role_as_the_table_says(cast: dict[str, Any], ids: dict[str, str]) -> None:
    checked: Counter[str] = Counter()
    wrong: list[str] = []
    skipped = 0
    for route in routes():
        if admin_route(route) and route not in ADMIN_CHECKED:
            skipped += 1  # Django's admin: one has_permission check for all of its pages
            continue
        expected = EXPECTED.get(route)
        if expected is None:
            wrong.append(f"new route {route}: add its expected status per role")
            continue
        path = path_for(route, ids)
        for method, per_role in expected.items():
            for role in per_role:
                client = Client(raise_request_exception=False, REMOTE_ADDR=OUTSIDE)
                if role != "anonymous":
                    client.force_login(cast[role])
                response = client.get(path) if method == "GET" else client.post(path, {})
                got = observed(response)
                checked[method] += 1
                if got != per_role[role]:
                    wrong.append(f"{method} {path} as {role}: expected {per_role[role]}, got {got}")
    assert not wrong, "\n".join(wrong)
    routes_checked = len([r for r in routes() if not admin_route(r) or r in ADMIN_CHECKED])
    # The figures the issue asks for (printed with -s): routes x roles x methods.
    print(
        f"\nchecked {routes_checked} routes x {len(ROLES)} roles: {dict(checked)} requests;"
        f" {skipped} admin routes skipped"
    )
    assert checked["GET"] == routes_checked * len(ROLES)


def test_a_route_missing_from_the_table_fails_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard itself: a view added without a row in the table is reported by its route."""
    trimmed = {route: row_ for route, row_ in EXPECTED.items() if route != "approvals/count/"}
    monkeypatch.setattr(f"{__name__}.EXPECTED", trimmed)
    with pytest.raises(AssertionError, match=re.escape("new route approvals/count/: add its expected status per role")):
        test_every_route_is_in_the_expectation_table()
