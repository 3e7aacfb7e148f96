"""The loser of a race: the page opened with a form, someone else decided, then the loser clicked.

Whatever happened meanwhile, the answer shows the task as it now is: the outcome and who decided when
it closed; the winner's decision and no form while that is still being applied.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalTask, Decision
from config.ports import free_port
from tests.support.data import pending_task
from tests.support.web import logged_in
from workflows.types import CompleteTaskInput

FORM = 'name="choice"'


@pytest.fixture
def erin(cast: dict[str, Any]) -> User:
    """bob's colleague in approvers: the winner."""
    user = User.objects.create(username="erin")
    user.groups.add(Group.objects.get(name="approvers"))
    return user


def opened_by_bob(cast: dict[str, Any]) -> tuple[ApprovalTask, Client]:
    task = pending_task("Team offsite", requester=cast["alice"])
    bob = logged_in(cast["bob"])
    assert FORM in bob.get(task.get_absolute_url()).content.decode()  # bob's page offers the form
    return task, bob


def close_as_approved_by(task: ApprovalTask, decision: Decision) -> None:
    """What the workflow's complete_task activity does once the winner's decision applies."""
    services.complete_task(
        data=CompleteTaskInput(
            workflow_id=task.workflow_id, outcome="approved", decided_by=decision.user.username, comment="fine",
            decided_at=timezone.now().isoformat(), level=1, escalations=0, decision_id=str(decision.decision_id),
        )
    )  # fmt: skip


def bob_clicks(bob: Client, task: ApprovalTask, htmx: bool) -> str:
    url = reverse("approvals:decide", args=[task.pk])
    if htmx:
        response = bob.post(url, {"choice": "approve"}, headers={"HX-Request": "true"})
        assert response.status_code == 200
        return response.content.decode()
    response = bob.post(url, {"choice": "approve"})
    assert response.status_code == 302
    return bob.get(response["Location"]).content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("htmx", [True, False])
def test_the_loser_sees_whose_decision_is_being_applied_and_no_form(
    cast: dict[str, Any], erin: User, settings: Any, htmx: bool
) -> None:
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"  # erin's decision waits in the outbox
    task, bob = opened_by_bob(cast)
    services.decide_task(task=task, user=erin, choice="approve", comment="")
    page = bob_clicks(bob, task, htmx)
    assert "Already decided by erin" in page
    assert FORM not in page
    assert "<strong>erin</strong> chose to <strong>approve</strong>" in page
    assert not Decision.objects.filter(user=cast["bob"]).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("htmx", [True, False])
def test_the_loser_sees_the_outcome_when_the_task_has_closed(
    cast: dict[str, Any], erin: User, settings: Any, htmx: bool
) -> None:
    task, bob = opened_by_bob(cast)
    winner = Decision.objects.create(task=task, user=erin, choice="approve", delivered_at=timezone.now())
    close_as_approved_by(task, winner)
    page = bob_clicks(bob, task, htmx)
    assert "Already approved by erin" in page
    assert FORM not in page and "Pending" not in page
    assert "<h2>Outcome</h2>" in page and "by <strong>erin</strong>" in page


@pytest.mark.django_db(transaction=True)
def test_the_loser_waits_briefly_for_the_winners_decision_to_apply(
    cast: dict[str, Any], erin: User, settings: Any
) -> None:
    settings.TOLLGATE_DECISION_WAIT_SECONDS = 5
    task, bob = opened_by_bob(cast)
    winner = Decision.objects.create(task=task, user=erin, choice="approve", delivered_at=timezone.now())

    def worker_applies_it() -> None:  # the winner's decision reaches the workflow a moment later
        time.sleep(0.5)
        try:
            close_as_approved_by(task, winner)
        finally:
            connection.close()

    applier = threading.Thread(target=worker_applies_it)
    applier.start()
    page = bob_clicks(bob, task, htmx=True)
    applier.join()
    assert "Already decided by erin" in page and FORM not in page
    assert "<h2>Outcome</h2>" in page and "by <strong>erin</strong>" in page
    assert '<span class="status status-approved">Approved</span>' in page  # the header too, out of band
