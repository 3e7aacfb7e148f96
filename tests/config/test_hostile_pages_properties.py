"""Property-based hostile input for every form and every query-string parameter of every page
(issue 12, "Keep it true"): arbitrary text, huge numbers, NULs, impossible dates and deeply nested
JSON, sent by the role whose view actually parses them, end in a 2xx, 3xx or 4xx page, never a 500.

Temporal is a free port nobody listens on, so the views that call it answer their "Temporal
unreachable" path at once (a 503 is allowed only as that designed page). A request that raises is
caught through Django's ``got_request_exception`` signal, so a failure shows the exception itself.

Deterministic for CI: ``derandomize=True`` (the examples follow from the source; no seed, no database).
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Group
from django.core.signals import got_request_exception
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from approvals.models import ApprovalTask, Delegation, Policy, RoutingRule, TaskAssignment
from config.ports import free_port
from monitoring.models import Execution
from tests.support.properties import examples

pytestmark = pytest.mark.django_db

PAGES = settings(
    max_examples=examples(50),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---- hostile values ----------------------------------------------------------------------------------

PRINTABLE = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)  # the test client sends UTF-8
NASTY = st.sampled_from(
    [
        "", " ", "0", "-1", "1.5", "²", "٣", "9" * 30, "9" * 5000, "-" + "9" * 5000, "1e999", "-1e999", "NaN",
        "inf", "\x00", "a\x00b", "null", "true", "[]", "{}", '{"": 1}', '{"amount": 1e999}', "2025-02-30",
        "0001-01-01", "9999-12-31", "0001-01-01T00:00:00", "9999-12-31T23:59:59-12:00", "-", "--id", "%", "%ff",
        "' OR 1=1 --", '" OR ""="', "<script>x</script>", "../../etc/passwd", "approve", "reject", "save",
        "preview", "add_level", "add", "delete", "end", "signal", "cancel", "terminate", "reset", "yes", "1",
        "24h", "custom", "-duration", "Running",
    ]
)  # fmt: skip
DEEP_JSON = st.builds(
    lambda depth, pair: pair[0] * depth + "1" + pair[1] * depth,
    st.sampled_from([33, 1000, 5000]),  # past the decoder's own limit (about 1,000)
    st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"payload":[', "]}")]),
)
LONG = st.builds(lambda n: "x" * n, st.sampled_from([101, 2001, 20_000]))  # past every length limit
VALUE = PRINTABLE | NASTY | DEEP_JSON | LONG
VALUES = VALUE | st.lists(VALUE, min_size=2, max_size=3)  # a parameter sent several times


def params(*names: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(names), VALUES, max_size=len(names))


# ---- the world the pages show ---------------------------------------------------------------------


@pytest.fixture
def unreachable_temporal(settings: Any) -> Any:
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"  # nobody listens: "Temporal unreachable", at once
    return settings


@pytest.fixture
def world(cast: dict[str, Any], unreachable_temporal: Any) -> dict[str, Any]:
    """A pending task for bob's group from alice, a routing rule, an out-of-office entry and a
    snapshot row, so every page has rows to show and every form something to point at."""
    token = uuid.uuid4().hex[:10]
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{token}", run_id="run-1", request_id=token, title="Buy a laptop",
        status=ApprovalTask.Status.PENDING, due_at=timezone.now() + timedelta(days=1), requested_by="alice",
        requester=cast["alice"], payload={"amount": 1200}, policy=Policy.objects.get(slug="standard"),
    )  # fmt: skip
    TaskAssignment.objects.create(task=task, level=1, group=Group.objects.get(name="approvers"))
    rule = RoutingRule.objects.create(order=1, request_type="purchase", policy=Policy.objects.get(slug="standard"))
    today = timezone.localdate()
    away = Delegation.objects.create(
        user=cast["bob"], delegate=cast["carol"], starts_on=today, ends_on=today + timedelta(days=3)
    )
    Execution.objects.create(
        workflow_id=task.workflow_id, run_id="run-1", workflow_type="ApprovalWorkflow", status="Running",
        task_queue="approvals", start_time=timezone.now() - timedelta(hours=1),
    )  # fmt: skip
    return {**cast, "task": task, "rule": rule, "away": away, "policy": Policy.objects.get(slug="standard")}


@pytest.fixture
def raised() -> Iterator[list[str]]:
    """The tracebacks of requests that raised (the client then shows the 500 page)."""
    seen: list[str] = []

    def record(sender: Any, request: Any = None, **kwargs: Any) -> None:
        seen.append(traceback.format_exc())

    got_request_exception.connect(record, weak=False)
    yield seen
    got_request_exception.disconnect(record)


def login(user: Any) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def answered(response: Any, raised: list[str], what: str, *, may_refuse: bool = False) -> None:
    """Below 500, or the designed "Temporal cannot be reached" page; never the error page. And past
    the access check (no 403, no login redirect): the view really parsed the input."""
    assert not raised, f"{what} raised:\n{raised[-1]}"
    if not may_refuse:
        assert response.status_code != 403 and "/accounts/login/" not in response.get("Location", ""), what
    body = response.content.decode(errors="replace")
    if response.status_code == 503:
        assert "cannot be reached" in body, f"{what}: 503 {body[:300]}"
    else:
        assert response.status_code < 500, f"{what}: {response.status_code} {body[:300]}"
    assert "Traceback" not in body


def get(client: Client, path: str, query: dict[str, Any], raised: list[str], *, htmx: bool = False) -> Any:
    headers = {"HX-Request": "true"} if htmx else {}
    raised.clear()  # the fixture lives for the whole test, across examples
    response = client.get(path, query, headers=headers)
    answered(response, raised, f"GET {path} {str(query)[:200]}")
    return response


def post(
    client: Client, path: str, data: dict[str, Any], raised: list[str], *, htmx: bool = False, may_refuse: bool = False
) -> Any:
    headers = {"HX-Request": "true"} if htmx else {}
    raised.clear()
    response = client.post(path, data, headers=headers)
    answered(response, raised, f"POST {path} {str(data)[:200]}", may_refuse=may_refuse)
    return response


# ---- approvals: inbox, lists, detail, decide, new request -------------------------------------------


INBOX_QUERY = ("show", "q", "page", "format", "sort", "requester", "policy", "type", "overdue", "level", "via", "where")


@PAGES
@given(query=params(*INBOX_QUERY), htmx=st.booleans())
@example(query={"page": "9" * 5000, "q": "\x00"}, htmx=False)
@example(query={"sort": "--due", "level": "9" * 5000, "where": "amount >= 1e999"}, htmx=False)
@example(query={"where": "amount >= " + "9" * 400, "via": "\x00", "policy": "standard"}, htmx=True)
def test_the_inbox_and_its_lists_answer_any_query(
    world: dict[str, Any], raised: list[str], query: dict[str, Any], htmx: bool
) -> None:
    bob = login(world["bob"])
    for path in ("/approvals/", "/approvals/decisions/", "/approvals/requests/", "/approvals/count/"):
        get(bob, path, query, raised, htmx=htmx)
    get(bob, f"/approvals/{world['task'].pk}/", query, raised)


@PAGES
@given(data=params("choice", "comment"), htmx=st.booleans())
@example(data={"choice": "reject", "comment": "\x00"}, htmx=True)
def test_a_decision_form_answers_any_post(
    world: dict[str, Any], raised: list[str], data: dict[str, Any], htmx: bool
) -> None:
    post(login(world["bob"]), f"/approvals/{world['task'].pk}/decide/", data, raised, htmx=htmx)


@PAGES
@given(data=params("name", "query"))
@example(data={"name": "x" * 2001, "query": "where=" + "[" * 5000})
@example(data={"name": "a\x00b", "query": "sort=\x00&level=" + "9" * 5000})
def test_saving_an_inbox_view_answers_any_post(world: dict[str, Any], raised: list[str], data: dict[str, Any]) -> None:
    post(login(world["bob"]), "/approvals/views/", data, raised)


@PAGES
@given(data=params("action", "sort", "where"), as_bob=st.booleans())
@example(data={"action": "release", "sort": "\x00"}, as_bob=True)
def test_claiming_a_task_answers_any_post(
    world: dict[str, Any], raised: list[str], data: dict[str, Any], as_bob: bool
) -> None:
    client = login(world["bob"] if as_bob else world["alice"])
    query = "&".join(f"{k}={quote(str(v)[:300])}" for k, v in data.items() if k != "action")
    post(client, f"/approvals/{world['task'].pk}/claim/?{query}", {"action": data.get("action", "")}, raised)


@PAGES
@given(data=params("body"), as_bob=st.booleans())
@example(data={"body": "\x00"}, as_bob=True)
@example(data={"body": "x" * 20_000}, as_bob=False)
def test_commenting_on_a_task_answers_any_post(
    world: dict[str, Any], raised: list[str], data: dict[str, Any], as_bob: bool
) -> None:
    post(login(world["bob"] if as_bob else world["alice"]), f"/approvals/{world['task'].pk}/comment/", data, raised)


@PAGES
@given(data=params("reason"))
@example(data={"reason": "\x00" + "x" * 20_000})
def test_withdrawing_a_request_answers_any_post(world: dict[str, Any], raised: list[str], data: dict[str, Any]) -> None:
    post(login(world["alice"]), f"/approvals/{world['task'].pk}/withdraw/", data, raised)


@PAGES
@given(data=params("task", "all", "query", "choice", "comment", "run"), htmx=st.booleans())
@example(data={"task": ["9" * 5000, "²", "-1", str(2**63)], "choice": "approve"}, htmx=True)
@example(data={"all": "1", "query": "where=amount>=" + "9" * 5000 + "&level=\x00", "choice": "approve"}, htmx=False)
@example(data={"task": "1", "choice": "reject", "comment": "\x00", "run": "not-a-uuid"}, htmx=True)
def test_a_bulk_decision_answers_any_post(
    world: dict[str, Any], raised: list[str], data: dict[str, Any], htmx: bool
) -> None:
    bob = login(world["bob"])
    post(bob, "/approvals/bulk/", {**data, "task": data.get("task", str(world["task"].pk))}, raised, htmx=htmx)
    get(bob, f"/approvals/bulk/{uuid.uuid4()}/progress/", {}, raised)


NEW_REQUEST = (
    "title",
    "description",
    "request_type",
    "policy",
    *(f"{k}_{i}" for i in range(1, 6) for k in ("key", "value")),
)


@PAGES
@given(data=params(*NEW_REQUEST))
@example(data={"title": "Laptop", "policy": "9" * 5000, "key_1": "amount", "value_1": "\x00"})
def test_the_request_form_answers_any_post(world: dict[str, Any], raised: list[str], data: dict[str, Any]) -> None:
    post(login(world["alice"]), "/approvals/new/", data, raised)


# ---- admins: policies, routing; everyone: out of office ---------------------------------------------

POLICY_FORM = (
    "name", "slug", "description", "final_action", "rejection_is_veto", "is_default", "revision", "action",
    "levels-TOTAL_FORMS", "levels-INITIAL_FORMS", "levels-MIN_NUM_FORMS", "levels-MAX_NUM_FORMS",
    "levels-0-groups", "levels-0-users", "levels-0-timeout", "levels-0-reminder", "levels-0-required_approvals",
    "levels-0-DELETE", "levels-1-timeout", "levels-1-groups", "inbox_fields", "no_bulk_decisions", "claim_for",
)  # fmt: skip
VALID_POLICY = {
    "name": "Props", "slug": "props", "final_action": "expire", "revision": "0", "levels-TOTAL_FORMS": "1",
    "levels-INITIAL_FORMS": "0", "levels-0-timeout": "1d", "levels-0-required_approvals": "1",
}  # fmt: skip


@PAGES
@given(data=params(*POLICY_FORM), base=st.booleans(), existing=st.booleans())
# "Add a level" read the form count with ``str.isdigit``: "²" and 5,000 digits are digits int() refuses.
@example(data={"action": "add_level", "levels-TOTAL_FORMS": "²"}, base=True, existing=False)
@example(data={"action": "add_level", "levels-TOTAL_FORMS": "9" * 5000}, base=True, existing=True)
@example(data={"action": "preview", "levels-0-timeout": "9" * 5000 + "d"}, base=True, existing=False)
@example(data={"claim_for": "9" * 5000 + "d", "inbox_fields": "a, b, c, d, " + "x" * 300}, base=True, existing=True)
def test_the_policy_editor_answers_any_post(
    world: dict[str, Any], raised: list[str], data: dict[str, Any], base: bool, existing: bool
) -> None:
    admin = login(world["admin"])
    path = f"/approvals/policies/{world['policy'].pk}/edit/" if existing else "/approvals/policies/new/"
    post(admin, path, {**VALID_POLICY, **data} if base else data, raised)


@PAGES
@given(data=params("all", "task"))
@example(data={"task": ["9" * 5000, "²", "-1", str(2**63)]})
def test_pushing_a_policy_answers_any_post(world: dict[str, Any], raised: list[str], data: dict[str, Any]) -> None:
    admin = login(world["admin"])
    post(admin, f"/approvals/policies/{world['policy'].pk}/push/", data, raised)


@PAGES
@given(
    query=params("preview", "request_type", "payload"),
    data=params("action", "order", "request_type", "field", "operator", "value", "policy", "rule"),
)
@example(query={"preview": "1", "payload": '{"n": ' + "1" * 5000 + "}"}, data={})
@example(query={"preview": "1", "payload": "[" * 100_000}, data={"action": "delete", "rule": "²"})
def test_the_routing_page_answers_any_preview_and_any_post(
    world: dict[str, Any], raised: list[str], query: dict[str, Any], data: dict[str, Any]
) -> None:
    admin = login(world["admin"])
    get(admin, "/approvals/routing/", query, raised)
    post(admin, "/approvals/routing/", data, raised)


AWAY_FORM = ("user", "delegate", "starts_on", "ends_on", "reason", "action", "delegation")


@PAGES
@given(data=params(*AWAY_FORM), as_admin=st.booleans())
@example(data={"action": "end", "delegation": "9" * 5000}, as_admin=False)
@example(data={"starts_on": "9999-12-31", "ends_on": "0001-01-01", "delegate": "²"}, as_admin=True)
def test_the_out_of_office_page_answers_any_post(
    world: dict[str, Any], raised: list[str], data: dict[str, Any], as_admin: bool
) -> None:
    client = login(world["admin"] if as_admin else world["bob"])
    # Ending someone else's absence is refused (403) by design; everything else gets past the check.
    post(client, "/approvals/away/", data, raised, may_refuse=data.get("action") == "end")


# ---- the reference workflows' start page -------------------------------------------------------------

START_FIELDS = {
    "order": ("order_id", "amount", "items", "approval_threshold", "fail_payment"),
    "budget": ("team", "balance", "limit", "max_events"),
    "campaign": ("campaign_id", "title", "description", "approvers", "policy", "fan_out_limit", "payload"),
    "deployment": ("deployment_id", "service", "version", "flaky_failures", "fail_with", "rollout_seconds", "policy"),
}


@st.composite
def start_posts(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from([*START_FIELDS, "nonsense"]))
    names = START_FIELDS.get(kind, ("x",))
    data = draw(st.dictionaries(st.sampled_from(names), VALUES, max_size=len(names)))
    return kind, {f"{kind}-{name}": value for name, value in data.items()}


@PAGES
@given(start=start_posts())
@example(start=("campaign", {"campaign-title": "T", "campaign-approvers": "bob", "campaign-payload": "[" * 5000}))
@example(start=("campaign", {"campaign-title": "T", "campaign-approvers": "bob", "campaign-payload": "9" * 5000}))
@example(start=("order", {"order-amount": "1e999", "order-items": "desk:" + "9" * 5000}))
@example(start=("deployment", {"deployment-service": "s", "deployment-version": "1"}))  # valid: Temporal is away
def test_the_start_page_answers_any_post(
    world: dict[str, Any], raised: list[str], start: tuple[str, dict[str, Any]]
) -> None:
    kind, data = start
    alice = login(world["alice"])
    get(alice, "/approvals/start/", data, raised)
    post(alice, f"/approvals/start/{kind}/", data, raised)


# ---- monitoring --------------------------------------------------------------------------------------

MONITORING_QUERY = ("window", "start", "end", "format", "q", "type", "status", "workflow_id", "sort", "page", "minutes")


@settings(PAGES, max_examples=examples(25))  # six pages per example
@given(query=params(*MONITORING_QUERY), htmx=st.booleans())
@example(query={"window": "custom", "start": "0001-01-01T00:00:00", "end": "9999-12-31T23:59:59-12:00"}, htmx=False)
@example(query={"minutes": "9" * 5000, "format": "json"}, htmx=False)
@example(query={"page": "%ff" * 100, "sort": "--duration"}, htmx=False)
def test_every_monitoring_page_answers_any_query(
    world: dict[str, Any], raised: list[str], query: dict[str, Any], htmx: bool
) -> None:
    oscar = login(world["oscar"])
    for page in ("", "executions/", "retries/", "stuck/", "pending/", "trends/"):
        get(oscar, f"/monitoring/{page}", query, raised, htmx=htmx)


RUN_IDS = st.sampled_from(["run-1", "0", "-", "x" * 64]) | st.text("abcdef0123456789-", min_size=1, max_size=64)


@PAGES
@given(
    workflow_id=PRINTABLE.filter(bool) | NASTY.filter(bool) | LONG,
    run_id=RUN_IDS,
    data=params("action", "reason", "signal", "input", "confirm"),
)
# A signal's input went to ``json.loads`` unchecked: 100,000 levels were a RecursionError (500).
@example(workflow_id="approval-x", run_id="run-1", data={"action": "signal", "signal": "s", "input": "[" * 100_000})
@example(workflow_id="w", run_id="run-1", data={"action": "signal", "signal": "s", "input": "9" * 5000})
@example(workflow_id="w", run_id="run-1", data={"action": "signal", "signal": "s", "input": '{"n": NaN}'})
@example(workflow_id="a\x00b", run_id="run-1", data={"action": "cancel", "confirm": "yes"})
def test_an_execution_page_and_its_actions_answer_any_input(
    world: dict[str, Any], raised: list[str], workflow_id: str, run_id: str, data: dict[str, Any]
) -> None:
    oscar = login(world["oscar"])
    path = f"/monitoring/executions/{quote(workflow_id, safe='')}/{run_id}/"
    get(oscar, path, {}, raised)
    post(oscar, f"{path}act/", data, raised)
