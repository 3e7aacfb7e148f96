"""The inbox's sortable columns, combinable filters, payload conditions, saved views and columns."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals.models import ApprovalTask, Policy, RoutingRule, SavedView, TaskAssignment, compare
from tests.support.properties import examples

pytestmark = pytest.mark.django_db


def make_task(title: str, *, requester: Any = None, group: str | None = "approvers", user: Any = None,
              **fields: Any) -> ApprovalTask:  # fmt: skip
    """A pending task row as the register activity leaves it, with any column overridden."""
    token = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "workflow_id": f"approval-{token}", "request_id": token, "title": title, "status": "pending",
        "due_at": timezone.now() + timedelta(days=1), "requested_by": requester.username if requester else "system",
        "requester": requester, **fields,
    }  # fmt: skip
    task = ApprovalTask.objects.create(**values)
    if group:
        TaskAssignment.objects.create(task=task, level=task.level, group=Group.objects.get(name=group))
    if user is not None:
        TaskAssignment.objects.create(task=task, level=task.level, user=user)
    return task


def titles(client: Client, **query: str) -> list[str]:
    body = client.get(reverse("approvals:inbox"), query).content.decode()
    return re.findall(r'<td data-label="Request"><a href="[^"]*">([^<]+)</a>', body)


@pytest.fixture
def bob(client: Client, cast: dict[str, Any]) -> Client:
    client.force_login(cast["bob"])
    return client


def test_every_column_sorts_both_ways(bob: Client, cast: dict[str, Any]) -> None:
    now = timezone.now()
    make_task("B task", requested_by="zoe", level=2, due_at=now + timedelta(hours=3), created_at=now - timedelta(2))
    make_task("A task", requested_by="yan", level=3, due_at=now + timedelta(hours=1), created_at=now - timedelta(1))
    make_task("C task", requested_by="xia", level=1, due_at=now + timedelta(hours=2), created_at=now - timedelta(3))
    expected = {
        "due": ["A task", "C task", "B task"],
        "requested": ["C task", "B task", "A task"],
        "requester": ["C task", "A task", "B task"],
        "level": ["C task", "B task", "A task"],
        "title": ["A task", "B task", "C task"],
    }
    for key, order in expected.items():
        for show in ("pending", "all"):
            assert titles(bob, sort=key, show=show) == order, (key, show)
            assert titles(bob, sort=f"-{key}", show=show) == order[::-1], (key, show)


def test_a_header_link_sorts_by_its_column_and_then_the_other_way(bob: Client, cast: dict[str, Any]) -> None:
    make_task("Only task", policy=Policy.objects.get(slug="standard"))
    body = bob.get(reverse("approvals:inbox"), {"sort": "title", "policy": "standard"}).content.decode()
    assert 'href="?sort=-title&amp;policy=standard"' in body  # the active column reverses
    assert 'href="?sort=requester&amp;policy=standard"' in body  # the others keep the filters
    assert 'aria-sort="ascending"' in body


def test_filters_combine_and_stay_in_the_links(bob: Client, cast: dict[str, Any]) -> None:
    standard, quick = Policy.objects.get(slug="standard"), Policy.objects.get(slug="quick-demo")
    past = timezone.now() - timedelta(hours=1)
    make_task("Match", requester=cast["alice"], policy=standard, request_type="purchase", level=2, due_at=past,
              group=None, user=cast["bob"])  # fmt: skip
    make_task("Other requester", requested_by="zoe", policy=standard, request_type="purchase", level=2, due_at=past,
              group=None, user=cast["bob"])  # fmt: skip
    make_task("Other policy", requester=cast["alice"], policy=quick, request_type="purchase", level=2, due_at=past,
              group=None, user=cast["bob"])  # fmt: skip
    make_task("Other type", requester=cast["alice"], policy=standard, request_type="travel", level=2, due_at=past,
              group=None, user=cast["bob"])  # fmt: skip
    make_task("Not overdue", requester=cast["alice"], policy=standard, request_type="purchase", level=2, group=None,
              user=cast["bob"])  # fmt: skip
    make_task("Other level", requester=cast["alice"], policy=standard, request_type="purchase", level=1, due_at=past,
              group=None, user=cast["bob"])  # fmt: skip
    make_task("Through a group", requester=cast["alice"], policy=standard, request_type="purchase", level=2,
              due_at=past)  # fmt: skip
    query = {"requester": "alice", "policy": "standard", "type": "purchase", "overdue": "1", "level": "2"}
    assert titles(bob, **query, via="direct") == ["Match"]
    assert titles(bob, **query, via="group") == ["Through a group"]
    assert sorted(titles(bob, **query)) == ["Match", "Through a group"]
    body = bob.get(reverse("approvals:inbox"), {**query, "via": "direct"}).content.decode()
    # The task link carries the inbox's query, so the task page can offer "next task" in this order.
    assert "?requester=alice&amp;policy=standard&amp;type=purchase&amp;overdue=1&amp;level=2&amp;via=direct" in body
    assert "1 matching" in body


def test_a_payload_condition_compares_numbers_as_numbers(bob: Client, cast: dict[str, Any]) -> None:
    make_task("Big number", payload={"amount": 1200})
    make_task("Big text", payload={"amount": "12,000"})
    make_task("Small", payload={"amount": 999.5})
    make_task("Words", payload={"amount": "a lot"})
    make_task("No amount", payload={"vendor": "ACME"})
    # As routing rules do (``compare``): text that is not a number compares as text ("a lot" > "1000").
    assert sorted(titles(bob, where="amount >= 1000")) == ["Big number", "Big text", "Words"]
    assert titles(bob, where="amount<1000") == ["Small"]
    assert titles(bob, where="amount == 1,200") == ["Big number"]
    assert titles(bob, where="amount = a lot") == ["Words"]
    assert titles(bob, where="vendor contains acm") == ["No amount"]
    assert sorted(titles(bob, where="amount != 1200")) == ["Big text", "Small", "Words"]


PAYLOAD_VALUES = (
    st.integers(-100_000, 100_000)
    | st.integers(-20_000, 20_000).map(lambda n: n / 4)
    | st.integers(0, 99_999).map(lambda n: f"{n:,}")
    | st.sampled_from(["ACME", "a lot", "", "12 units", "-", "1000", " 1000 ", "1e3"])
)


@settings(
    max_examples=examples(40),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    values=st.lists(PAYLOAD_VALUES, min_size=1, max_size=6),
    operator=st.sampled_from([op.value for op in RoutingRule.Operator]),
    expected=st.sampled_from(["1000", "1,000", "0", "-2.5", "ACME", "a", "1e3", "12 units"]),
)
def test_the_database_filter_agrees_with_the_routing_rules_compare(
    cast: dict[str, Any], values: list[Any], operator: str, expected: str
) -> None:
    """What SQL selects is what ``compare`` (routing rules) says, task by task."""
    ApprovalTask.objects.all().delete()
    tasks = [make_task(f"t{n}", group=None, payload={"amount": value}) for n, value in enumerate(values)]
    make_task("no field", group=None, payload={"other": 1})
    if operator in (">", ">=", "<", "<=") and not re.match(r"^[-\d.,e]+$", expected):
        return  # the inbox refuses these before they reach the query (tested above)
    found = set(ApprovalTask.objects.where_payload("amount", operator, expected).values_list("title", flat=True))
    wanted = {task.title for task, value in zip(tasks, values, strict=True) if compare(value, operator, expected)}
    assert found == wanted


def test_bad_sort_and_filter_values_are_ignored_with_a_message(bob: Client, cast: dict[str, Any]) -> None:
    make_task("Still listed")
    response = bob.get(
        reverse("approvals:inbox"),
        {"sort": "--due", "level": "²", "via": "sideways", "where": "amount >= lots", "requester": "a\x00b"},
    )
    body = response.content.decode()
    assert response.status_code == 200 and "Still listed" in body
    for name in ("sort “--due”", "level “²”", "“via” “sideways”", "condition “amount &gt;= lots”", "“requester”"):
        assert f"Ignored {name}" in body, name


def test_a_saved_view_is_a_tab_of_its_owner_and_opens_its_query(bob: Client, cast: dict[str, Any]) -> None:
    make_task("Big", payload={"amount": 5000})
    make_task("Small", payload={"amount": 5})
    response = bob.post(reverse("approvals:save_view"), {"name": "Big ones", "query": "where=amount>=1000&sort=-title"})
    assert response.status_code == 302
    view = SavedView.objects.get(user=cast["bob"], name="Big ones")
    assert view.query == "sort=-title&where=amount+%3E%3D+1000"
    page = bob.get(reverse("approvals:inbox")).content.decode()
    assert f'href="{escape(view.get_absolute_url())}"' in page and ">Big ones</a>" in page
    assert titles(bob, sort="-title", where="amount >= 1000") == ["Big"]
    # Shareable by URL: carol opens the same link and gets the same filter on her own tasks; the tab is bob's.
    carol = Client()
    carol.force_login(cast["carol"])
    assert "Big ones" not in carol.get(view.get_absolute_url()).content.decode()
    assert carol.post(reverse("approvals:delete_view", args=[view.pk])).status_code == 404
    assert bob.post(reverse("approvals:delete_view", args=[view.pk])).status_code == 302
    assert not SavedView.objects.exists()


def test_saving_a_view_needs_a_name_and_a_post(bob: Client, cast: dict[str, Any]) -> None:
    assert bob.get(reverse("approvals:save_view")).status_code == 405
    bob.post(reverse("approvals:save_view"), {"name": "  ", "query": "sort=title"})
    assert not SavedView.objects.exists()


def test_the_policy_chooses_payload_columns_and_closed_tasks_say_who_decided(bob: Client, cast: dict[str, Any]) -> None:
    policy = Policy.objects.get(slug="standard")
    policy.inbox_fields = "amount, vendor"
    policy.save()
    make_task("Desk", policy=policy, payload={"amount": 1200, "vendor": "ACME", "secret": "not shown"})
    make_task("Chair", policy=policy, status="approved", decided_by="carol", decided_at=timezone.now())
    body = bob.get(reverse("approvals:inbox"), {"show": "all"}).content.decode()
    assert "<th>amount</th><th>vendor</th>" in body
    assert '<td data-label="amount">1200</td><td data-label="vendor">ACME</td>' in body
    assert "not shown" not in body
    decided = re.search(r'<td data-label="Decided" class="decided">(.*?)</td>', body)
    assert decided and decided.group(1).startswith("by carol <time")


def test_the_policy_editor_refuses_more_than_three_inbox_columns(client: Client, cast: dict[str, Any]) -> None:
    from approvals.forms import PolicyForm

    form = PolicyForm({"name": "P", "slug": "p", "final_action": "expire", "inbox_fields": "a, b, c, d"})
    assert not form.is_valid() and "At most 3 fields; 4 given." in form.errors["inbox_fields"]


def test_every_sort_and_filter_costs_the_same_number_of_queries(bob: Client, cast: dict[str, Any]) -> None:
    policy = Policy.objects.get(slug="standard")
    policy.inbox_fields = "amount"
    policy.save()
    SavedView.objects.create(user=cast["bob"], name="Mine", query="via=direct")

    def queries(**query: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert bob.get(reverse("approvals:inbox"), query).status_code == 200
        return len(captured.captured_queries)

    make_task("One", policy=policy, payload={"amount": 1})
    few = queries()
    for n in range(30):
        make_task(f"More {n}", policy=policy, payload={"amount": 2000 + n}, requester=cast["alice"], user=cast["bob"])
    assert queries() == few
    narrowed = queries(where="amount >= 1000", sort="-title", via="direct", requester="alice", policy="standard")
    assert narrowed == few + 1  # the filtered page counts its own matches (capped), once
    for key in ("due", "requested", "requester", "level", "title"):
        assert queries(sort=f"-{key}") == few


def test_a_number_too_large_for_a_float_is_filtered_without_an_error(bob: Client, cast: dict[str, Any]) -> None:
    make_task("Huge", payload={"amount": 10**400})  # PostgreSQL would refuse to cast it to double precision
    make_task("Plain", payload={"amount": 5})
    response = bob.get(reverse("approvals:inbox"), {"where": "amount >= 100"})
    assert response.status_code == 200
    assert titles(bob, where="amount >= 100") == ["Huge"]  # as compare() says: 1e400 reads as infinity
    assert compare(10**400, ">=", "100")
