"""A requester withdraws a pending request: the workflow is cancelled as them, and everything says so."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.urls import reverse
from temporalio.client import Client as TemporalClient

from approvals.models import ApprovalTask, AuditEntry
from config.ports import free_port
from tests.support.temporal import eventually
from tests.support.web import logged_in
from workflows import client as temporal

pytestmark = pytest.mark.django_db


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_alice_withdraws_her_request_and_the_workflow_ends_cancelled_by_her(
    cast: dict[str, Any], worker: Any, dev_server: Any
) -> None:
    request_id = uuid.uuid4().hex[:8]
    workflow_id = f"approval-{request_id}"
    temporal.run(
        temporal.start_approval,
        workflow_id=workflow_id,
        request={"request_id": request_id, "title": "Conference ticket", "requested_by": "alice"},
    )
    task = eventually(
        lambda: ApprovalTask.objects.filter(workflow_id=workflow_id, status="pending").first(), timeout=30
    )
    alice = logged_in(cast["alice"])
    assert 'id="withdraw"' in alice.get(task.get_absolute_url()).content.decode()
    assert logged_in(cast["bob"]).post(reverse("approvals:withdraw", args=[task.pk])).status_code == 403
    response = alice.post(reverse("approvals:withdraw", args=[task.pk]), {"reason": "Event cancelled"}, follow=True)
    assert "Request withdrawn" in response.content.decode() or "Withdrawal sent" in response.content.decode()
    task = eventually(lambda: ApprovalTask.objects.filter(pk=task.pk, status="cancelled").first(), timeout=30)
    assert (task.decided_by, task.comment) == ("alice", "Event cancelled")
    entry = AuditEntry.objects.get(task=task, kind="cancelled")
    assert entry.actor == "alice" and entry.message == "Cancelled by alice: Event cancelled"

    async def result() -> Any:
        client = await TemporalClient.connect(dev_server.address)
        return await client.get_workflow_handle(workflow_id).result()

    outcome = temporal.run(result)
    assert (outcome["outcome"], outcome["decided_by"]) == ("cancelled", "alice")
    page = logged_in(cast["bob"]).get(task.get_absolute_url()).content.decode()
    assert "by <strong>alice</strong>" in page and "Event cancelled" in page


def test_withdrawing_with_temporal_down_says_nothing_was_withdrawn(cast: dict[str, Any], settings: Any) -> None:
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"
    task = ApprovalTask.objects.create(
        workflow_id="approval-w1", request_id="w1", title="T", status="pending", requester=cast["alice"]
    )
    response = logged_in(cast["alice"]).post(reverse("approvals:withdraw", args=[task.pk]), follow=True)
    assert "cannot be reached: nothing was withdrawn" in response.content.decode()
    task.refresh_from_db()
    assert task.status == "pending"
    assert logged_in(cast["alice"]).get(reverse("approvals:withdraw", args=[task.pk])).status_code == 405
