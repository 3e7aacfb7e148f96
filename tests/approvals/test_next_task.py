"""Deciding one task after another: "next task" follows the inbox's sort and filter; the decision's
confirmation and a refused rejection's error are on the page where they are needed."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalTask, Decision, TaskAssignment

pytestmark = pytest.mark.django_db


def make_task(title: str, **fields: Any) -> ApprovalTask:
    token = uuid.uuid4().hex[:10]
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{token}", request_id=token, title=title, status="pending",
        due_at=timezone.now() + timedelta(days=1), requested_by="alice", **fields,
    )  # fmt: skip
    TaskAssignment.objects.create(task=task, level=1, group=Group.objects.get(name="approvers"))
    return task


@pytest.fixture
def bob(client: Client, cast: dict[str, Any]) -> Client:
    client.force_login(cast["bob"])
    return client


def decided_by(task: ApprovalTask, user: Any) -> None:
    Decision.objects.create(task=task, user=user, choice="approve", result="applied", delivered_at=timezone.now())


def test_next_task_follows_the_inbox_sort_and_filter_and_wraps_to_the_top(bob: Client, cast: dict[str, Any]) -> None:
    a, b, c = make_task("A", payload={"amount": 5}), make_task("B", payload={"amount": 5}), make_task("C")
    decided_by(b, cast["bob"])
    page = bob.get(reverse("approvals:detail", args=[b.pk]), {"sort": "-title"}).content.decode()
    assert f'href="/approvals/{a.pk}/?sort=-title" id="next-task"' in page  # after B, going down: A
    page = bob.get(reverse("approvals:detail", args=[b.pk]), {"sort": "title"}).content.decode()
    assert f'href="/approvals/{c.pk}/?sort=title" id="next-task"' in page
    # With a filter, only what it matches; past the last one, back to the first not yet decided.
    query = {"sort": "title", "where": "amount == 5"}
    page = bob.get(reverse("approvals:detail", args=[b.pk]), query).content.decode()
    assert f'href="/approvals/{a.pk}/?sort=title&amp;where=amount+%3D%3D+5" id="next-task"' in page
    decided_by(a, cast["bob"])
    page = bob.get(reverse("approvals:detail", args=[a.pk]), query).content.decode()
    assert 'id="next-task"' not in page and "Nothing else waiting in this view." in page


def test_an_undecided_task_offers_the_form_not_next(bob: Client, cast: dict[str, Any]) -> None:
    make_task("Other")
    task = make_task("Open")
    page = bob.get(reverse("approvals:detail", args=[task.pk]), {"sort": "title"}).content.decode()
    assert 'id="decision-form"' in page and 'id="next-task"' not in page
    assert f'action="/approvals/{task.pk}/decide/?sort=title"' in page  # the query goes on with the decision


def test_my_decisions_confirmation_stays_on_the_page_after_a_refresh(bob: Client, cast: dict[str, Any]) -> None:
    task = make_task("Decided")
    decided_by(task, cast["bob"])
    page = bob.get(reverse("approvals:detail", args=[task.pk])).content.decode()
    assert '<p class="result result-applied" role="status">Approved.</p>' in page


def test_rejecting_without_a_reason_answers_422_with_an_announced_error_by_the_comment_box(
    bob: Client, cast: dict[str, Any]
) -> None:
    task = make_task("Needs a reason")
    response = bob.post(
        reverse("approvals:decide", args=[task.pk]), {"choice": "reject"}, headers={"HX-Request": "true"}
    )
    body = response.content.decode()
    assert response.status_code == 422
    assert 'aria-invalid="true" aria-describedby="comment-error"' in body
    assert (
        '<p class="error" id="comment-error" role="alert" aria-live="assertive">Rejecting needs a reason.</p>' in body
    )
    assert not Decision.objects.exists()


def test_without_htmx_a_decision_redirects_to_the_task_with_the_inbox_query(
    bob: Client, cast: dict[str, Any], settings: Any
) -> None:
    from config.ports import free_port

    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"  # recorded for later: no server needed
    task = make_task("Plain")
    response = bob.post(
        reverse("approvals:decide", args=[task.pk]) + "?sort=-title&level=%C2%B2", {"choice": "approve"}
    )
    assert response.status_code == 302 and response["Location"] == f"/approvals/{task.pk}/?sort=-title"
