"""Operators act as themselves: an approval's human signals cannot be sent by hand from monitoring,
and cancelling an approval names the operator, on the real dev server with the real worker."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.urls import reverse
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client as TemporalClient

from approvals.models import ApprovalTask, Decision
from monitoring.models import ActionLog
from tests.support.temporal import DevServer, SampleWorker, describe, eventually, run_async, start, workflow_result
from tests.support.web import logged_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


@pytest.fixture
def both_worker(temporal_settings: Any, dev_server: DevServer) -> Any:
    """The app's workflows and the monitoring samples on one worker, on the session's dev server."""
    thread = SampleWorker(dev_server.address, temporal_settings.TEMPORAL_TASK_QUEUE).start()
    yield thread
    thread.stop()


def start_approval(address: str, queue: str, title: str) -> tuple[str, str, ApprovalTask]:
    request = {"request_id": uuid.uuid4().hex[:8], "title": title, "requested_by": "alice"}
    workflow_id = start(address, queue, "ApprovalWorkflow", request, workflow_id=f"approval-{request['request_id']}")
    task = eventually(lambda: ApprovalTask.objects.filter(workflow_id=workflow_id, status="pending").first())
    return workflow_id, describe(address, workflow_id).run_id, task


def signals_received(address: str, workflow_id: str) -> list[str]:
    async def go() -> list[str]:
        client = await TemporalClient.connect(address)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return [
            e.workflow_execution_signaled_event_attributes.signal_name
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        ]

    return run_async(go)


def test_an_operator_cannot_decide_push_or_cancel_an_approval_in_someone_elses_name(
    cast: dict[str, Any], dev_server: DevServer, both_worker: SampleWorker
) -> None:
    workflow_id, run_id, task = start_approval(dev_server.address, both_worker.task_queue, "Server rack")
    act_url = reverse("monitoring:act", args=[workflow_id, run_id])
    oscar = logged_in(cast["oscar"])
    as_bob = '{"decision": "approve", "user": "bob", "comment": "ok", "decision_id": "op-1"}'
    attempts = [
        ("decide", as_bob, f"decisions are made on the task page by the approver themselves: /approvals/{task.pk}/"),
        ("update_policy", '{"policy": {}, "by": "admin"}', "policy pushes are sent from the policy page"),
        ("cancel", '{"user": "bob", "reason": "no"}', "cancel this approval with the Cancel action, as yourself"),
    ]
    # Before the confirmation page, after it, through htmx and through the JSON twin's address: refused.
    variants: list[tuple[str, dict[str, str], dict[str, str]]] = [
        (act_url, {}, {}),
        (act_url, {"confirm": "yes"}, {}),
        (act_url, {"confirm": "yes"}, {"HX-Request": "true"}),
        (f"{act_url}?format=json", {"confirm": "yes"}, {}),
    ]
    for name, arg, message in attempts:
        for url, extra, headers in variants:
            response = oscar.post(url, {"action": "signal", "signal": name, "input": arg, **extra}, headers=headers)
            assert response.status_code == 302, (name, url)
            page = oscar.get(response["Location"]).content.decode()
            assert message in page, (name, url)

    assert signals_received(dev_server.address, workflow_id) == []
    assert not Decision.objects.exists()
    task.refresh_from_db()
    assert task.status == "pending" and not task.decided_by
    refused = ActionLog.objects.filter(workflow_id=workflow_id, action="signal", ok=False)
    assert refused.count() == len(attempts) * len(variants)
    assert all(entry.detail["refused"] is True and entry.username == "oscar" for entry in refused)
    assert {entry.detail["signal"] for entry in refused} == {"decide", "update_policy", "cancel"}


def test_an_operator_cancels_an_approval_as_themselves(
    cast: dict[str, Any], dev_server: DevServer, both_worker: SampleWorker
) -> None:
    workflow_id, run_id, task = start_approval(dev_server.address, both_worker.task_queue, "Conference trip")
    act_url = reverse("monitoring:act", args=[workflow_id, run_id])
    oscar = logged_in(cast["oscar"])
    page = oscar.get(reverse("monitoring:execution", args=[workflow_id, run_id])).content.decode()
    assert 'id="approval-actions"' in page
    # Whatever the form says about users, the cancel names the logged-in operator.
    form = {"action": "cancel", "reason": "duplicate request", "signal": "cancel", "input": '{"user": "bob"}'}
    response = oscar.post(act_url, {**form, "confirm": "yes"}, follow=True)
    assert "Approval cancelled as oscar" in response.content.decode()

    result = workflow_result(dev_server.address, workflow_id)
    assert (result["outcome"], result["decided_by"], result["comment"]) == ("cancelled", "oscar", "duplicate request")
    task = eventually(lambda: ApprovalTask.objects.filter(pk=task.pk, status="cancelled").first())
    assert task.decided_by == "oscar"
    assert task.audit.filter(kind="cancelled", actor="oscar", message="Cancelled by oscar: duplicate request").exists()
    entry = ActionLog.objects.get(workflow_id=workflow_id)
    assert (entry.action, entry.ok, entry.username) == ("cancel", True, "oscar")
    assert entry.detail == {"signal": "cancel", "input": {"user": "oscar", "reason": "duplicate request"}}


def test_other_workflows_still_take_signals_of_those_names_and_temporal_cancellation(
    cast: dict[str, Any], dev_server: DevServer, both_worker: SampleWorker
) -> None:
    address, queue = dev_server.address, both_worker.task_queue
    workflow_id = start(address, queue, "MonMixWorkflow", {"mode": "hang"})
    run_id = describe(address, workflow_id).run_id
    oscar = logged_in(cast["oscar"])
    act_url = reverse("monitoring:act", args=[workflow_id, run_id])
    oscar.post(act_url, {"action": "signal", "signal": "decide", "input": '{"user": "bob"}', "confirm": "yes"})
    oscar.post(act_url, {"action": "cancel", "confirm": "yes"})
    assert signals_received(address, workflow_id) == ["decide"]
    log = list(ActionLog.objects.order_by("created_at").values_list("action", "ok", "message"))
    assert log == [
        ("signal", True, "Signal 'decide' sent."),
        ("cancel", True, "Cancellation requested: the workflow decides how to wind down."),
    ]
