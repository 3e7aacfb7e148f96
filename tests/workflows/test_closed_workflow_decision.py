"""A decision that finds its workflow already closed (terminated, timed out) closes the task at once,
from how the workflow really ended, and says so; on the real dev server with the real worker."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus

from approvals.models import ApprovalTask, Decision
from approvals.services import deliver_outbox
from tests.support.temporal import DevServer, WorkerThread, eventually, run_async

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def start_approval(address: str, queue: str, title: str, *, timeout: timedelta | None = None) -> ApprovalTask:
    request_id = uuid.uuid4().hex[:8]

    async def go() -> None:
        client = await TemporalClient.connect(address)
        await client.start_workflow(
            "ApprovalWorkflow", {"request_id": request_id, "title": title, "requested_by": "alice"},
            id=f"approval-{request_id}", task_queue=queue, execution_timeout=timeout,
        )  # fmt: skip

    run_async(go)
    return eventually(lambda: ApprovalTask.objects.filter(request_id=request_id, status="pending").first())


def terminate(address: str, workflow_id: str) -> None:
    async def go() -> None:
        client = await TemporalClient.connect(address)
        await client.get_workflow_handle(workflow_id).terminate(reason="its parent was terminated")

    run_async(go)


def status(address: str, workflow_id: str) -> WorkflowExecutionStatus | None:
    async def go() -> WorkflowExecutionStatus | None:
        client = await TemporalClient.connect(address)
        return (await client.get_workflow_handle(workflow_id).describe()).status

    return run_async(go)


def decide_as_bob(bob: Any, task: ApprovalTask, htmx: bool) -> str:
    client = Client()
    client.force_login(bob)
    url = reverse("approvals:decide", args=[task.pk])
    if htmx:
        return client.post(url, {"choice": "approve"}, headers={"HX-Request": "true"}).content.decode()
    response = client.post(url, {"choice": "approve"})
    assert response.status_code == 302
    return client.get(response["Location"]).content.decode()


def at(task: ApprovalTask) -> str:
    """As every page writes a time: the viewer's zone, with its name."""
    assert task.decided_at is not None
    return f"{timezone.localtime(task.decided_at):%Y-%m-%d %H:%M %Z}"


@pytest.mark.parametrize("htmx", [True, False])
def test_a_decision_on_a_terminated_approval_closes_its_task_at_once(
    cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer, htmx: bool
) -> None:
    task = start_approval(dev_server.address, worker.task_queue, "Orphaned child")
    terminate(dev_server.address, task.workflow_id)

    page = decide_as_bob(cast["bob"], task, htmx)

    task.refresh_from_db()  # no monitoring refresh ran: the decision itself closed it
    assert task.status == "cancelled"
    assert f"This request was closed: its workflow was terminated at {at(task)}." in page
    assert 'name="choice"' not in page and "<h2>Outcome</h2>" in page
    assert task.audit.filter(kind="cancelled", message__contains="terminated in Temporal, outside Tollgate").exists()
    decision = Decision.objects.get(task=task, user=cast["bob"])
    assert (decision.result, decision.result_reason) == ("ignored", "the workflow was terminated")


def test_a_decision_on_a_timed_out_approval_marks_its_task_failed(
    cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer
) -> None:
    task = start_approval(dev_server.address, worker.task_queue, "Too slow", timeout=timedelta(seconds=3))
    eventually(lambda: status(dev_server.address, task.workflow_id) == WorkflowExecutionStatus.TIMED_OUT, timeout=20)

    page = decide_as_bob(cast["bob"], task, htmx=True)

    task.refresh_from_db()
    assert task.status == "failed"
    assert f"This request was closed: its workflow was timed out at {at(task)}." in page
    assert task.audit.filter(kind="failed", message__contains="timed out in Temporal").exists()


def test_the_relay_closes_the_task_of_a_decision_it_finds_too_late(
    cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer
) -> None:
    task = start_approval(dev_server.address, worker.task_queue, "Decided while Temporal was away")
    decision = Decision.objects.create(task=task, user=cast["bob"], choice="approve")  # still in the outbox
    terminate(dev_server.address, task.workflow_id)

    assert deliver_outbox(older_than=timedelta(0)) == (1, 0)

    task.refresh_from_db()
    decision.refresh_from_db()
    assert task.status == "cancelled"
    assert (decision.result, decision.result_reason) == ("ignored", "the workflow was terminated")
