"""“I'm on it”: a claim tells the other approvers who is looking at a task, never stops them deciding,
lapses by itself after the policy's time, and is in the audit trail."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalTask, AuditEntry, Decision, Policy, TaskAssignment, TaskClaim
from config.ports import free_port
from tests.support.web import logged_in

pytestmark = pytest.mark.django_db


def make_task(title: str, **fields: Any) -> ApprovalTask:
    token = uuid.uuid4().hex[:10]
    task = ApprovalTask.objects.create(
        workflow_id=f"approval-{token}", request_id=token, title=title, status="pending",
        due_at=timezone.now() + timedelta(days=1), requested_by="alice", policy=Policy.objects.get(slug="standard"),
        **fields,
    )  # fmt: skip
    TaskAssignment.objects.create(task=task, level=1, group=Group.objects.get(name="approvers"))
    return task


@pytest.fixture
def erin(cast: dict[str, Any]) -> Any:
    """A second approver in bob's group."""
    user = get_user_model().objects.create_user("erin")
    user.groups.add(Group.objects.get(name="approvers"))
    return user


def claim(client: Client, task: ApprovalTask, action: str = "claim") -> str:
    response = client.post(reverse("approvals:claim", args=[task.pk]), {"action": action}, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def test_a_claim_shows_in_the_others_inbox_and_never_stops_them_deciding(
    cast: dict[str, Any], erin: Any, settings: Any
) -> None:
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"  # the decision is recorded for later: enough here
    policy = Policy.objects.get(slug="standard")
    policy.claim_for = timedelta(minutes=10)
    policy.save()
    task = make_task("Laptop")
    bob, other = logged_in(cast["bob"]), logged_in(erin)
    page = claim(bob, task)
    held = TaskClaim.objects.get(task=task)
    assert held.user == cast["bob"] and held.expires_at == held.claimed_at + timedelta(minutes=10)
    assert "You're on it until" in page and "Unclaim" in page
    assert "bob is on it" in other.get(reverse("approvals:inbox")).content.decode()
    assert "you're on it" in bob.get(reverse("approvals:inbox")).content.decode()
    erin_page = other.get(task.get_absolute_url()).content.decode()
    assert "is on it until" in erin_page and "you may still decide" in erin_page and 'id="decision-form"' in erin_page
    # erin may not take it over while it holds ...
    assert "bob is already on it" in claim(other, task)
    assert TaskClaim.objects.get(task=task).user == cast["bob"]
    # ... but may decide it.
    assert other.post(reverse("approvals:decide", args=[task.pk]), {"choice": "approve"}).status_code == 302
    assert Decision.objects.get(task=task).user == erin
    kinds = list(AuditEntry.objects.filter(task=task).values_list("kind", "actor"))
    assert ("claimed", "bob") in kinds
    call_command("verify_audit")  # the chain holds with the claim in it


def test_a_claim_lapses_by_itself_after_the_policy_time(cast: dict[str, Any], erin: Any) -> None:
    task = make_task("Old claim")
    bob, other = logged_in(cast["bob"]), logged_in(erin)
    claim(bob, task)
    TaskClaim.objects.filter(task=task).update(claimed_at=timezone.now() - timedelta(hours=1, seconds=1))
    assert "bob is on it" not in other.get(reverse("approvals:inbox")).content.decode()
    assert "I'm on it" in other.get(task.get_absolute_url()).content.decode()
    claim(other, task)
    assert TaskClaim.objects.get(task=task).user == erin


def test_only_the_holder_unclaims_and_the_release_is_audited(cast: dict[str, Any], erin: Any) -> None:
    task = make_task("Give back")
    bob, other = logged_in(cast["bob"]), logged_in(erin)
    claim(bob, task)
    assert "You were not on this task." in claim(other, task, "release")
    assert TaskClaim.objects.filter(task=task).exists()
    assert "Released" in claim(bob, task, "release")
    assert not TaskClaim.objects.exists()
    assert list(
        AuditEntry.objects.filter(task=task, kind__in=["claimed", "released"]).values_list("kind", flat=True)
    ) == [
        "claimed",
        "released",
    ]


def test_who_may_claim(cast: dict[str, Any]) -> None:
    task = make_task("Mine to ask", requester=cast["alice"])
    assert "You cannot take this task: requesters may not decide their own request." in claim(
        logged_in(cast["alice"]), task
    )
    assert logged_in(cast["dave"]).post(reverse("approvals:claim", args=[task.pk])).status_code == 404
    assert logged_in(cast["bob"]).get(reverse("approvals:claim", args=[task.pk])).status_code == 405
    assert not TaskClaim.objects.exists()


def test_claims_cost_the_inbox_no_query_per_row(cast: dict[str, Any], erin: Any) -> None:
    bob = logged_in(cast["bob"])

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert bob.get(reverse("approvals:inbox")).status_code == 200
        return len(captured.captured_queries)

    tasks = [make_task(f"Task {n}") for n in range(5)]
    few = queries()
    for task in tasks:
        claim(logged_in(erin), task)
    assert queries() == few


def test_the_policy_editor_sets_the_claim_time_the_bulk_switch_and_the_inbox_columns(cast: dict[str, Any]) -> None:
    admin = logged_in(cast["admin"])
    form = {
        "name": "Sensitive", "slug": "sensitive", "final_action": "expire", "revision": "0", "action": "save",
        "levels-TOTAL_FORMS": "1", "levels-INITIAL_FORMS": "0", "levels-0-timeout": "1d",
        "levels-0-required_approvals": "1", "levels-0-groups": [str(Group.objects.get(name="approvers").pk)],
        "inbox_fields": "amount, vendor", "no_bulk_decisions": "on", "claim_for": "30m",
    }  # fmt: skip
    response = admin.post(reverse("approvals:policy_new"), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    policy = Policy.objects.get(slug="sensitive")
    assert (policy.inbox_fields, policy.no_bulk_decisions, policy.claim_for) == (
        "amount, vendor",
        True,
        timedelta(minutes=30),
    )
    refused = admin.post(reverse("approvals:policy_new"), {**form, "slug": "other", "claim_for": "31d"})
    assert refused.status_code == 422 and "A claim holds between one minute and 30 days." in refused.content.decode()
