"""Questions and answers on a task between its approvers and its requester, without deciding."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalTask, AuditEntry, Decision, TaskAssignment, TaskComment
from tests.support.web import logged_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(cast: dict[str, Any]) -> ApprovalTask:
    token = uuid.uuid4().hex[:10]
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{token}", request_id=token, title="Standing desk", status="pending",
        due_at=timezone.now() + timedelta(days=1), requested_by="alice", requester=cast["alice"],
    )  # fmt: skip
    TaskAssignment.objects.create(task=task, level=1, group=Group.objects.get(name="approvers"))
    return task


def post(client: Client, task: ApprovalTask, body: str) -> str:
    response = client.post(reverse("approvals:comment", args=[task.pk]), {"body": body}, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def test_bob_asks_alice_answers_each_side_is_mailed_and_it_is_in_the_audit_chain(
    cast: dict[str, Any], task: ApprovalTask, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        page = post(logged_in(cast["bob"]), task, "Please attach the quote.")
    assert "Please attach the quote." in page
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert "Please attach the quote." in mail.outbox[0].body and task.get_absolute_url() in mail.outbox[0].body
    with django_capture_on_commit_callbacks(execute=True):
        post(logged_in(cast["alice"]), task, "Attached: 640 EUR.")
    assert mail.outbox[1].to == ["bob@example.com"]  # the approvers so far, not herself
    assert list(TaskComment.objects.values_list("author__username", "body")) == [
        ("bob", "Please attach the quote."),
        ("alice", "Attached: 640 EUR."),
    ]
    entries = list(AuditEntry.objects.filter(task=task, kind="comment").values_list("actor", "message"))
    assert entries == [("bob", "bob: Please attach the quote."), ("alice", "alice: Attached: 640 EUR.")]
    assert not Decision.objects.exists()  # a question is not a decision
    task.refresh_from_db()
    assert task.status == "pending"
    call_command("verify_audit")


def test_who_may_comment(cast: dict[str, Any], task: ApprovalTask) -> None:
    url = reverse("approvals:comment", args=[task.pk])
    assert logged_in(cast["dave"]).post(url, {"body": "hi"}).status_code == 404
    assert logged_in(cast["oscar"]).post(url, {"body": "hi"}).status_code == 403  # sees every task; not a party
    assert 'id="comment-form"' not in logged_in(cast["oscar"]).get(task.get_absolute_url()).content.decode()
    assert logged_in(cast["bob"]).get(url).status_code == 405
    assert "A comment needs some text" in post(logged_in(cast["bob"]), task, "   ")
    assert not TaskComment.objects.exists()
