"""Every page: the cast's access, wrong methods, CSRF, escaping, honest answers."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from approvals.models import ApprovalTask, Decision
from config.ports import free_port
from tests.support.data import pending_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def temporal_down(settings: Any) -> Any:
    """Nothing listens at TEMPORAL_ADDRESS."""
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"
    return settings


def login(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def test_pages_need_a_login(client: Client, cast: dict[str, Any]) -> None:
    task = pending_task(requester=cast["alice"])
    for url in [
        reverse("approvals:inbox"),
        reverse("approvals:new"),
        reverse("approvals:my_decisions"),
        reverse("approvals:my_requests"),
        reverse("approvals:detail", args=[task.pk]),
    ]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url
    response = client.post(reverse("approvals:decide", args=[task.pk]), {"choice": "approve"})
    assert response.status_code == 302 and not Decision.objects.exists()


def test_the_outsider_cannot_see_or_decide_a_task(client: Client, cast: dict[str, Any]) -> None:
    task = pending_task(requester=cast["alice"])
    login(client, cast["dave"])
    assert client.get(reverse("approvals:detail", args=[task.pk])).status_code == 404
    assert client.post(reverse("approvals:decide", args=[task.pk]), {"choice": "approve"}).status_code == 404
    assert task.title not in client.get(reverse("approvals:inbox")).content.decode()
    assert not Decision.objects.exists()


def test_the_escalation_approver_does_not_see_a_task_before_escalation(client: Client, cast: dict[str, Any]) -> None:
    task = pending_task(requester=cast["alice"])
    login(client, cast["carol"])
    assert client.get(reverse("approvals:detail", args=[task.pk])).status_code == 404


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("approvals:inbox", "post"),
        ("approvals:my_decisions", "post"),
        ("approvals:my_requests", "post"),
        ("approvals:detail", "post"),
        ("approvals:decide", "get"),
        ("approvals:new", "put"),
    ],
)
def test_views_refuse_the_wrong_method(client: Client, cast: dict[str, Any], name: str, method: str) -> None:
    task = pending_task(requester=cast["alice"])
    login(client, cast["bob"])
    args = [task.pk] if name in ("approvals:detail", "approvals:decide") else []
    assert getattr(client, method)(reverse(name, args=args)).status_code == 405


def test_an_htmx_request_after_the_session_expired_sends_the_page_to_the_login(client: Client) -> None:
    response = client.get(reverse("approvals:inbox"), headers={"HX-Request": "true"})
    assert response.status_code == 200 and response["HX-Redirect"].startswith(reverse("login"))


def test_health_and_readiness(client: Client, temporal_down: Any) -> None:
    assert client.get(reverse("healthz")).json() == {"status": "ok"}
    response = client.get(reverse("readyz"))
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert len(body["problems"]) == 1 and body["problems"][0].startswith("temporal: cannot reach Temporal")


def test_csrf_is_enforced_on_decisions(cast: dict[str, Any]) -> None:
    task = pending_task(requester=cast["alice"])
    client = login(Client(enforce_csrf_checks=True), cast["bob"])
    response = client.post(reverse("approvals:decide", args=[task.pk]), {"choice": "approve"})
    assert response.status_code == 403
    assert b"This form has expired" in response.content
    assert not Decision.objects.exists()


def test_inbox_lists_my_tasks_pending_first_by_due_time(client: Client, cast: dict[str, Any]) -> None:
    from datetime import timedelta

    from django.utils import timezone

    later = pending_task("Later", requester=cast["alice"])
    sooner = pending_task("Sooner", requester=cast["alice"])
    done = pending_task("Done", requester=cast["alice"])
    ApprovalTask.objects.filter(pk=later.pk).update(due_at=timezone.now() + timedelta(days=2))
    ApprovalTask.objects.filter(pk=sooner.pk).update(due_at=timezone.now() - timedelta(hours=1))
    ApprovalTask.objects.filter(pk=done.pk).update(status="approved")
    pending_task("Somebody else's", groups=("managers",))
    login(client, cast["bob"])
    page = client.get(reverse("approvals:inbox")).content.decode()
    assert page.index("Sooner") < page.index("Later")
    assert "Done" not in page and "Somebody else" not in page
    assert "<strong>2</strong> pending" in page and '<strong class="overdue">1</strong> overdue' in page
    everything = client.get(reverse("approvals:inbox"), {"show": "all"}).content.decode()
    assert everything.index("Later") < everything.index("Done")


def test_inbox_search_and_htmx_partial(client: Client, cast: dict[str, Any]) -> None:
    pending_task("Laptop for Ann", requester=cast["alice"])
    pending_task("Travel to Oslo", requester=cast["alice"])
    login(client, cast["bob"])
    response = client.get(reverse("approvals:inbox"), {"q": "oslo"}, headers={"HX-Request": "true"})
    body = response.content.decode()
    assert "Travel to Oslo" in body and "Laptop" not in body
    assert "<html" not in body and body.lstrip().startswith('<div id="rows">')


def test_inbox_queries_do_not_grow_with_the_number_of_tasks(client: Client, cast: dict[str, Any]) -> None:
    login(client, cast["bob"])

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("approvals:inbox")).status_code == 200
        return len(captured.captured_queries)

    for n in range(3):
        pending_task(f"Task {n}", requester=cast["alice"])
    few = queries()
    for n in range(40):
        pending_task(f"More {n}", requester=cast["alice"], users=(cast["bob"],))
    assert queries() == few


def test_inbox_counts_stop_at_the_cap_and_say_so(client: Client, cast: dict[str, Any], settings: Any) -> None:
    """Above INBOX_COUNT_CAP the counts read "N+" and paging stops there; at the cap they are exact."""
    from datetime import timedelta

    from django.utils import timezone

    settings.INBOX_COUNT_CAP = 30
    login(client, cast["bob"])
    for n in range(30):
        pending_task(f"Task {n:02d}", requester=cast["alice"])
    ApprovalTask.objects.filter(title__in=["Task 05", "Task 07"]).update(due_at=timezone.now() - timedelta(hours=1))
    page = client.get(reverse("approvals:inbox")).content.decode()
    assert "<strong>30</strong> pending" in page and '<strong class="overdue">2</strong> overdue' in page
    assert page.index("Task 05") < page.index("Task 07") < page.index("Task 00")  # overdue first, then by due
    assert "Page 1 of 2</span>" in page
    for n in range(30, 35):
        pending_task(f"Task {n:02d}", requester=cast["alice"])
    page = client.get(reverse("approvals:inbox")).content.decode()
    assert "<strong>30+</strong> pending" in page and "Page 1 of 2+</span>" in page
    assert '<span class="badge" id="pending-count">30+</span>' in page
    last = client.get(reverse("approvals:inbox"), {"page": 2}).content.decode()
    assert "Search to reach the rest." in last
    found = client.get(reverse("approvals:inbox"), {"q": "Task 34"}).content.decode()
    assert "Task 34" in found and "Page" not in found


def test_inbox_counts_count_a_task_once_however_it_reaches_the_approver(cast: dict[str, Any], settings: Any) -> None:
    from datetime import timedelta

    from django.contrib.auth.models import Group
    from django.utils import timezone

    from approvals.models import TaskAssignment

    both = pending_task("Both ways", requester=cast["alice"], users=(cast["bob"],))  # group and directly
    twice = pending_task("Two levels", requester=cast["alice"])
    TaskAssignment.objects.create(task=twice, level=2, group=Group.objects.get(name="approvers"))
    pending_task("Direct only", requester=cast["alice"], groups=(), users=(cast["bob"],))
    pending_task("Not bob's", requester=cast["alice"], groups=("managers",))
    ApprovalTask.objects.filter(pk=both.pk).update(due_at=timezone.now() - timedelta(minutes=5))
    counts = ApprovalTask.objects.inbox_counts(cast["bob"])
    assert (counts.pending, counts.overdue, counts.capped) == (3, 1, False)

    # Past the cap: "N+" pending, and overdue still counted (from the tasks in due order).
    settings.INBOX_COUNT_CAP = 2
    counts = ApprovalTask.objects.inbox_counts(cast["bob"])
    assert (str(counts), counts.overdue, counts.capped) == ("2+", 1, True)
    assert ApprovalTask.objects.inbox_counts(cast["dave"]).pending == 0


def test_header_badge_is_inline_on_the_inbox_and_fetched_on_load_elsewhere(
    client: Client, cast: dict[str, Any]
) -> None:
    pending_task("One", requester=cast["alice"])
    pending_task("Two", requester=cast["alice"])
    login(client, cast["bob"])
    inbox = client.get(reverse("approvals:inbox")).content.decode()
    assert '<span class="badge" id="pending-count">2</span>' in inbox
    assert 'hx-trigger="load,' not in inbox
    elsewhere = client.get(reverse("approvals:my_decisions")).content.decode()
    assert '<span class="badge" id="pending-count" aria-busy="true"></span>' in elsewhere
    assert f'hx-get="{reverse("approvals:pending_count")}"' in elsewhere and 'hx-trigger="load,' in elsewhere
    badge = client.get(reverse("approvals:pending_count")).content.decode()
    assert badge.strip() == '<span class="badge" id="pending-count">2</span>'


def test_payload_html_is_escaped_and_long_values_are_folded(client: Client, cast: dict[str, Any]) -> None:
    task = pending_task(
        "<img src=x onerror=alert(1)>",
        requester=cast["alice"],
        payload={"<b>key</b>": "<script>alert('x')</script>", "long": "y" * 1000, "nested": {"a": [1, "<i>"]}},
    )
    login(client, cast["bob"])
    page = client.get(reverse("approvals:detail", args=[task.pk])).content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>key</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;key&lt;/b&gt;" in page and "&lt;i&gt;" in page
    assert "<details><summary>yyy" in page


def test_reject_needs_a_reason(client: Client, cast: dict[str, Any]) -> None:
    task = pending_task(requester=cast["alice"])
    login(client, cast["bob"])
    response = client.post(
        reverse("approvals:decide", args=[task.pk]),
        {"choice": "reject", "comment": " "},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 422
    assert "Rejecting needs a reason." in response.content.decode()
    assert not Decision.objects.exists()


def test_a_bad_choice_is_refused_with_a_message(client: Client, cast: dict[str, Any]) -> None:
    task = pending_task(requester=cast["alice"])
    login(client, cast["bob"])
    response = client.post(reverse("approvals:decide", args=[task.pk]), {"choice": "maybe"})
    assert response.status_code == 422 and "Select a valid choice" in response.content.decode()


def test_the_requester_may_not_decide_their_own_request(client: Client, cast: dict[str, Any]) -> None:
    task = pending_task(requester=cast["bob"])
    login(client, cast["bob"])
    assert client.post(reverse("approvals:decide", args=[task.pk]), {"choice": "approve"}).status_code == 403


def test_with_temporal_down_a_decision_is_recorded_once_and_said_so(
    client: Client, cast: dict[str, Any], temporal_down: Any
) -> None:
    task = pending_task(requester=cast["alice"])
    login(client, cast["bob"])
    url = reverse("approvals:decide", args=[task.pk])
    first = client.post(url, {"choice": "approve", "comment": "ok"}, headers={"HX-Request": "true"})
    assert "it will be applied when the workflow engine is back" in first.content.decode()
    second = client.post(url, {"choice": "reject", "comment": "changed my mind"}, headers={"HX-Request": "true"})
    assert "it will be applied when the workflow engine is back" in second.content.decode()
    decision = Decision.objects.get()
    assert (decision.choice, decision.delivered_at, decision.delivery_attempts) == ("approve", None, 2)
    assert "cannot reach Temporal" in decision.last_delivery_error


def test_without_htmx_a_decision_redirects_with_a_message(
    client: Client, cast: dict[str, Any], temporal_down: Any
) -> None:
    task = pending_task(requester=cast["alice"])
    login(client, cast["bob"])
    response = client.post(reverse("approvals:decide", args=[task.pk]), {"choice": "approve"}, follow=True)
    assert response.redirect_chain == [(task.get_absolute_url(), 302)]
    assert "it will be applied when the workflow engine is back" in response.content.decode()


def test_of_two_approvers_the_second_is_told_who_decided_first(
    client: Client, cast: dict[str, Any], temporal_down: Any
) -> None:
    task = pending_task(requester=cast["alice"], users=(cast["carol"],))
    login(client, cast["bob"])
    client.post(reverse("approvals:decide", args=[task.pk]), {"choice": "approve"})
    other = login(Client(), cast["carol"])
    response = other.post(
        reverse("approvals:decide", args=[task.pk]),
        {"choice": "reject", "comment": "no"},
        headers={"HX-Request": "true"},
    )
    assert "Already decided by bob at" in response.content.decode()
    assert list(Decision.objects.values_list("user__username", flat=True)) == ["bob"]


def test_a_decided_task_shows_who_decided_when_and_why(client: Client, cast: dict[str, Any]) -> None:
    from django.utils import timezone

    task = pending_task(requester=cast["alice"])
    ApprovalTask.objects.filter(pk=task.pk).update(
        status="rejected", decided_by="carol", decided_at=timezone.now(), comment="too expensive"
    )
    login(client, cast["bob"])
    page = client.get(reverse("approvals:detail", args=[task.pk])).content.decode()
    assert "Rejected" in page and "<strong>carol</strong>" in page and "too expensive" in page
    assert 'name="choice"' not in page
    response = client.post(reverse("approvals:decide", args=[task.pk]), {"choice": "approve"}, follow=True)
    assert "Already rejected by carol." in response.content.decode()
    assert not Decision.objects.exists()


def test_my_decisions_lists_what_i_decided(client: Client, cast: dict[str, Any], temporal_down: Any) -> None:
    task = pending_task("Approve me", requester=cast["alice"])
    pending_task("Not me", requester=cast["alice"])
    login(client, cast["bob"])
    client.post(reverse("approvals:decide", args=[task.pk]), {"choice": "approve"})
    page = client.get(reverse("approvals:my_decisions")).content.decode()
    assert "Approve me" in page and "Not me" not in page and "not yet delivered" in page


def test_the_request_form_validates_and_keeps_what_was_typed(client: Client, cast: dict[str, Any]) -> None:
    login(client, cast["alice"])
    response = client.post(
        reverse("approvals:new"), {"title": "", "description": "keep me", "key_1": "", "value_1": "orphan"}
    )
    assert response.status_code == 422
    body = response.content.decode()
    assert "This field is required." in body and "Give this value a name." in body and "keep me" in body
    assert not ApprovalTask.objects.exists()


def test_a_request_made_while_temporal_is_down_waits_to_be_started(
    client: Client, cast: dict[str, Any], temporal_down: Any, django_capture_on_commit_callbacks: Any
) -> None:
    login(client, cast["alice"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("approvals:new"), {"title": "Team dinner", "key_1": "amount", "value_1": "300 EUR"}
        )
    task = ApprovalTask.objects.get()
    assert response.status_code == 302 and response["Location"] == task.get_absolute_url()
    assert (task.status, task.payload, task.requester) == ("starting", {"amount": "300 EUR"}, cast["alice"])
    assert "cannot reach Temporal" in task.start_error
    assert "Team dinner" in client.get(reverse("approvals:my_requests")).content.decode()


def test_staff_and_operators_get_a_link_to_the_workflow_in_the_temporal_ui(
    client: Client, cast: dict[str, Any], settings: Any
) -> None:
    settings.TEMPORAL_UI_URL = "https://temporal.example.com/"
    task = pending_task(requester=cast["alice"])
    link = f"https://temporal.example.com/namespaces/default/workflows/{task.workflow_id}"
    login(client, cast["oscar"])
    assert link in client.get(reverse("approvals:detail", args=[task.pk])).content.decode()
    login(client, cast["bob"])
    assert "Temporal UI" not in client.get(reverse("approvals:detail", args=[task.pk])).content.decode()


def test_the_temporal_ui_link_quotes_odd_workflow_ids(settings: Any) -> None:
    from workflows.client import temporal_ui_url

    settings.TEMPORAL_UI_URL = ""
    settings.TEMPORAL_ADDRESS = "127.0.0.1:7300"
    assert temporal_ui_url("order/7 ?x") == "http://127.0.0.1:8300/namespaces/default/workflows/order%2F7%20%3Fx"
    assert temporal_ui_url("w", "r-1").endswith("/workflows/w/r-1/history")
    settings.TEMPORAL_ADDRESS = "temporal.internal:7233"
    assert temporal_ui_url("w") == ""
