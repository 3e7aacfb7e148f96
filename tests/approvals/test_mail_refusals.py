"""Mail links that cannot decide say why; one mail per approver per event; mail preferences."""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalTask, AuditEntry, Decision, MailPreference, Notification, TaskAssignment
from config.ports import free_port
from workflows.types import NotifyInput

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_temporal(settings: Any) -> None:
    """Nothing here reaches a workflow: an address where nothing answers makes sure of it."""
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"
    settings.TOLLGATE_BASE_URL = "http://testserver"


def open_task(requester: User, *, level: int = 1, **fields: Any) -> ApprovalTask:
    token = uuid.uuid4().hex[:10]
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{token}", request_id=token, title="Buy a laptop", status="pending", level=level,
        due_at=timezone.now() + timedelta(days=1), requested_by=requester.username, requester=requester, **fields,
    )  # fmt: skip
    TaskAssignment.objects.create(task=task, level=1, group=Group.objects.get(name="approvers"))
    return task


def notify(task: ApprovalTask, kind: str = "assigned", *, key: str = "") -> bool:
    event = NotifyInput(event_key=key or f"run-{task.pk}:{kind}:1:", workflow_id=task.workflow_id, kind=kind, level=1)
    return services.send_notification(data=event)


def mailed_link(address: str, choice: str) -> str:
    (message,) = [m for m in mail.outbox if m.to == [address]]
    found = re.search(rf"^\s*{choice}:\s+(\S+)\s*$", str(message.body), re.MULTILINE)
    assert found, message.body
    return urlparse(found.group(1)).path


def test_a_mail_carries_the_key_fields_and_two_links_and_a_get_decides_nothing(cast: dict[str, Any]) -> None:
    task = open_task(cast["alice"], payload={"amount": 1200, "vendor": "ACME", "notes": "x" * 500})
    assert notify(task)
    (message,) = mail.outbox
    assert message.to == ["bob@example.com"] and message.extra_headers["Auto-Submitted"] == "auto-generated"
    assert "amount: 1200" in message.body and "vendor: ACME" in message.body
    assert "x" * 199 + "…" in message.body and "x" * 201 not in message.body  # cut short: the page has it all
    for choice in ("Approve", "Reject"):
        response = Client().get(mailed_link("bob@example.com", choice))
        assert response.status_code == 200 and response["Cache-Control"] == "no-store"
        assert f"{choice} this request?" in response.content.decode()
    assert not Decision.objects.exists()


def test_an_expired_link_says_so(cast: dict[str, Any], settings: Any) -> None:
    task = open_task(cast["alice"])
    notify(task)
    approve = mailed_link("bob@example.com", "Approve")
    settings.TOLLGATE_MAIL_LINK_MAX_AGE = timedelta(seconds=1)
    time.sleep(2.1)
    response = Client().post(approve, {"comment": "ok"})
    assert response.status_code == 410 and "This link has expired" in response.content.decode()
    assert not Decision.objects.exists()


def test_a_changed_link_is_refused(cast: dict[str, Any]) -> None:
    notify(open_task(cast["alice"]))
    approve = mailed_link("bob@example.com", "Approve")
    forged = approve.replace("mail/ey", "mail/ez")
    response = Client().get(forged)
    assert response.status_code == 400 and "This link is not valid" in response.content.decode()


def test_a_link_for_a_level_the_request_was_escalated_past_says_so(cast: dict[str, Any]) -> None:
    task = open_task(cast["alice"])
    notify(task)
    approve = mailed_link("bob@example.com", "Approve")
    TaskAssignment.objects.create(task=task, level=2, group=Group.objects.get(name="managers"))
    ApprovalTask.objects.filter(pk=task.pk).update(level=2, escalations=1)
    page = Client().get(approve).content.decode()
    assert "This request was escalated past you: it is at level 2 now, and this link was for level 1" in page
    assert Client().post(approve, {"comment": "ok"}).status_code == 409
    assert not Decision.objects.exists()


def test_a_link_to_a_request_someone_else_decided_names_them(cast: dict[str, Any]) -> None:
    erin = User.objects.create_user("erin", "erin@example.com", "x")
    erin.groups.add(Group.objects.get(name="approvers"))
    task = open_task(cast["alice"])
    notify(task)
    approve = mailed_link("bob@example.com", "Approve")
    Decision.objects.create(task=task, user=erin, choice="reject", comment="too dear")
    page = Client().get(approve).content.decode()
    assert "Already decided by erin at" in page and "Approve this request?" not in page
    assert Client().post(approve, {"comment": "ok"}).status_code == 409
    ApprovalTask.objects.filter(pk=task.pk).update(status="rejected", decided_by="erin", decided_at=timezone.now())
    page = Client(headers={"cookie": "tollgate_tz=Europe/Berlin"}).get(approve).content.decode()
    assert re.search(r"This request was already rejected by erin at \d{4}-\d\d-\d\d \d\d:\d\d CES?T\.", page), page
    assert not Decision.objects.filter(user=cast["bob"]).exists()


def test_rejecting_from_a_link_needs_a_reason(cast: dict[str, Any]) -> None:
    notify(open_task(cast["alice"]))
    response = Client().post(mailed_link("bob@example.com", "Reject"), {"comment": "  "})
    assert response.status_code == 422 and "Rejecting needs a reason." in response.content.decode()
    assert not Decision.objects.exists()


def test_each_approver_gets_one_mail_per_event_however_they_are_assigned(cast: dict[str, Any]) -> None:
    # bob: through the group and directly, at two levels; alice asked and is in the group too.
    cast["alice"].groups.add(Group.objects.get(name="approvers"))
    task = open_task(cast["alice"], level=2)
    TaskAssignment.objects.create(task=task, level=1, user=cast["bob"])
    TaskAssignment.objects.create(task=task, level=2, group=Group.objects.get(name="approvers"))
    assert notify(task, "reminder", key="r:1")
    assert [m.to for m in mail.outbox] == [["bob@example.com"]]
    assert not notify(task, "reminder", key="r:1")  # a retried activity: nothing more
    assert len(mail.outbox) == 1
    entry = AuditEntry.objects.get(task=task, kind="reminded")
    assert entry.message == "Reminder mailed to 1 approver"


def test_a_user_who_chose_a_digest_or_no_mail_gets_no_immediate_mail(cast: dict[str, Any]) -> None:
    erin = User.objects.create_user("erin", "erin@example.com", "x")
    erin.groups.add(Group.objects.get(name="approvers"))
    MailPreference.objects.create(user=cast["bob"], delivery="digest")
    MailPreference.objects.create(user=erin, delivery="none")
    task = open_task(cast["alice"])
    assert notify(task)
    assert mail.outbox == []
    assert Notification.objects.get(task=task).sent_at is not None


def test_the_digest_lists_each_users_open_tasks_once_a_day(cast: dict[str, Any]) -> None:
    MailPreference.objects.create(user=cast["bob"], delivery="digest")
    first, second = open_task(cast["alice"]), open_task(cast["alice"])
    ApprovalTask.objects.filter(pk=second.pk).update(title="Train tickets")
    assert services.send_digests() == (1, 0)
    (message,) = mail.outbox
    assert message.to == ["bob@example.com"] and message.subject == "2 requests waiting for your decision"
    assert "Buy a laptop" in message.body and "Train tickets" in message.body
    assert message.body.count("Approve: http://testserver/approvals/mail/") == 2
    assert services.send_digests() == (0, 0)  # the same day again: nobody twice
    assert len(mail.outbox) == 1
    assert first.pk != second.pk


def test_the_settings_page_saves_the_choice(cast: dict[str, Any]) -> None:
    client = Client()
    assert client.get(reverse("approvals:settings"))["Location"].startswith("/accounts/login/")
    client.force_login(cast["bob"])
    page = client.get(reverse("approvals:settings")).content.decode()
    assert "bob@example.com" in page and 'value="digest"' in page
    assert 'href="/approvals/settings/"' in page  # linked from the header
    response = client.post(reverse("approvals:settings"), {"delivery": "digest"})
    assert response.status_code == 302
    assert MailPreference.objects.get(user=cast["bob"]).delivery == "digest"
    wrong = client.post(reverse("approvals:settings"), {"delivery": "hourly"})
    assert wrong.status_code == 422 and "Select a valid choice" in wrong.content.decode()
    assert client.put(reverse("approvals:settings")).status_code == 405
