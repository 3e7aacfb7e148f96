"""ApprovalWorkflow on the time-skipping test server, with the real activities and database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core import mail
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from approvals.models import ApprovalTask, AuditEntry, Notification
from tests.support.data import make_policy
from tests.support.temporal import StartedWorkflows, decision, registered, task_row

pytestmark = pytest.mark.django_db(transaction=True)


_started = StartedWorkflows()


@pytest.fixture(autouse=True)
async def _record_histories(request: pytest.FixtureRequest, env: WorkflowEnvironment) -> AsyncIterator[None]:
    """With RECORD_HISTORIES=1, keep each workflow's history as a replay fixture
    (tests/workflows/test_replay.py replays them on the current code)."""
    _started.handles.clear()
    yield
    await _started.record(request.node.name)


async def start(env: WorkflowEnvironment, queue: str, **fields: Any) -> WorkflowHandle[Any, Any]:
    request = {"request_id": uuid.uuid4().hex[:8], "title": "New laptop", "requested_by": "alice", **fields}
    handle = await env.client.start_workflow(
        "ApprovalWorkflow", request, id=f"approval-{request['request_id']}", task_queue=queue
    )
    return _started.add(handle)


@sync_to_async
def notifications(workflow_id: str, kind: str) -> list[Notification]:
    return list(Notification.objects.filter(task__workflow_id=workflow_id, kind=kind, sent_at__isnull=False))


async def test_it_is_approved_by_an_assigned_approver(env, queue, two_levels) -> None:
    handle = await start(env, queue, policy="two-levels", payload={"amount": 1200})
    await registered(handle)
    await handle.signal("decide", decision("bob", comment="fine"))
    result = await handle.result()
    assert result["outcome"] == "approved"
    assert result["decided_by"] == "bob"
    assert result["comment"] == "fine"
    assert (result["level"], result["escalations"]) == (1, 0)
    assert result["decided_at"].endswith("Z")
    task = await task_row(handle.id)
    assert (task.status, task.decided_by, task.payload) == ("approved", "bob", {"amount": 1200})
    kinds = await sync_to_async(lambda: list(AuditEntry.objects.filter(task=task).values_list("kind", flat=True)))()
    assert kinds == ["requested", "assigned", "approved"]
    assert [m.to for m in mail.outbox if "Approval needed" in m.subject] == [["bob@example.com"]]


async def test_it_is_rejected_with_the_reason(env, queue, two_levels) -> None:
    handle = await start(env, queue, policy="two-levels")
    await registered(handle)
    await handle.signal("decide", decision("bob", "reject", "over budget"))
    result = await handle.result()
    assert (result["outcome"], result["decided_by"], result["comment"]) == ("rejected", "bob", "over budget")
    assert (await task_row(handle.id)).status == "rejected"


async def test_it_escalates_through_every_level_then_expires(env, queue, two_levels) -> None:
    handle = await start(env, queue, policy="two-levels")
    result = await handle.result()  # time skips past both deadlines
    assert result["outcome"] == "expired"
    assert result["decided_by"] is None
    assert (result["level"], result["escalations"]) == (2, 1)
    task = await task_row(handle.id)
    assert (task.status, task.level, task.escalations) == ("expired", 2, 1)
    assignments = await sync_to_async(lambda: sorted((a.level, a.label) for a in task.assignments.all()))()
    assert assignments == [(1, "group approvers"), (2, "group managers")]
    escalated = await notifications(handle.id, "escalated")
    assert [n.recipients for n in escalated] == [["carol@example.com"]]
    status = await handle.query("status")
    assert [e["type"] for e in status["events"] if e["type"] in ("escalated", "final_action")] == [
        "escalated",
        "final_action",
    ]


async def test_earlier_levels_keep_the_right_to_decide_after_escalation(env, queue, two_levels) -> None:
    handle = await start(env, queue, policy="two-levels")
    await registered(handle)
    await env.sleep(timedelta(minutes=90))  # past level 1's hour
    status = await handle.query("status")
    assert status["level"] == 2
    await handle.signal("decide", decision("bob"))
    result = await handle.result()
    assert (result["outcome"], result["decided_by"], result["level"], result["escalations"]) == (
        "approved",
        "bob",
        2,
        1,
    )


async def test_the_escalation_approver_may_decide_only_after_escalation(env, queue, two_levels) -> None:
    handle = await start(env, queue, policy="two-levels")
    await registered(handle)
    await handle.signal("decide", decision("carol", decision_id="carol-early"))
    await env.sleep(timedelta(minutes=61))
    await handle.signal("decide", decision("carol", decision_id="carol-late"))
    result = await handle.result()
    assert (result["decided_by"], result["decision_id"]) == ("carol", "carol-late")
    status = await handle.query("status")
    ignored = [e for e in status["events"] if e["type"] == "ignored"]
    assert [e["id"] for e in ignored] == ["carol-early"]
    assert "not assigned at level 1" in ignored[0]["detail"]


async def test_reminders_go_out_at_the_interval_until_the_deadline(env, queue, two_levels) -> None:
    handle = await start(env, queue, policy="two-levels")
    await registered(handle)
    await env.sleep(timedelta(minutes=50))  # reminders at 20 and 40 minutes
    await handle.signal("decide", decision("bob"))
    await handle.result()
    reminders = await notifications(handle.id, "reminder")
    assert len(reminders) == 2
    assert all(n.recipients == ["bob@example.com"] for n in reminders)
    assert len([m for m in mail.outbox if m.subject.startswith("Reminder:")]) == 2


@pytest.mark.parametrize(
    ("action", "outcome"), [("approve", "approved"), ("reject", "rejected"), ("expire", "expired")]
)
async def test_each_final_action_applies_after_days_of_silence(env, queue, cast, action, outcome) -> None:
    await sync_to_async(make_policy)(
        f"final-{action}", [{"groups": ["approvers"], "timeout": timedelta(days=3)}], final_action=action
    )
    handle = await start(env, queue, policy=f"final-{action}")
    result = await handle.result()
    assert result["outcome"] == outcome
    assert result["decided_by"] is None
    assert f"'{action}'" in result["comment"]
    task = await task_row(handle.id)
    assert task.status == outcome
    assert task.decided_at is not None and task.created_at is not None
    assert timedelta(days=3) <= task.decided_at - task.created_at < timedelta(days=3, seconds=5)


async def test_duplicate_decisions_are_applied_once(env, queue, two_levels) -> None:
    handle = await start(env, queue, policy="two-levels")
    await registered(handle)
    same = decision("bob", decision_id="d-1")
    await handle.signal("decide", same)
    await handle.signal("decide", same)
    result = await handle.result()
    assert (result["outcome"], result["decision_id"]) == ("approved", "d-1")
    status = await handle.query("status")
    assert sorted(e["type"] for e in status["events"] if e.get("id") == "d-1") == ["decided", "ignored"]
    assert [e["detail"] for e in status["events"] if e["type"] == "ignored"] == ["duplicate decision_id"]


async def test_ineligible_and_malformed_decisions_are_recorded_and_ignored(env, queue, two_levels) -> None:
    handle = await start(env, queue, policy="two-levels")
    await registered(handle)
    await handle.signal("decide", decision("dave", decision_id="outsider"))
    await handle.signal("decide", decision("alice", decision_id="requester"))
    await handle.signal("decide", decision("nobody-such", decision_id="ghost"))
    await handle.signal("decide", {"decision": "maybe", "user": "bob", "decision_id": "bad"})
    await handle.signal("decide", "not even an object")
    # Eligibility checks run concurrently: let these settle before bob's, or
    # they may be ignored as "already approved" instead, which is also right.
    for _ in range(200):
        status = await handle.query("status")
        if len([e for e in status["events"] if e["type"] == "ignored"]) == 5:
            break
        await asyncio.sleep(0.05)
    await handle.signal("decide", decision("bob", decision_id="bob"))
    result = await handle.result()
    assert (result["decided_by"], result["decision_id"]) == ("bob", "bob")
    status = await handle.query("status")
    reasons = {e["id"]: e["detail"] for e in status["events"] if e["type"] == "ignored"}
    assert "not assigned" in reasons["outsider"]
    assert "requesters may not decide" in reasons["requester"]
    assert "no such active user" in reasons["ghost"]
    assert "must be 'approve' or 'reject'" in reasons["bad"]
    assert "must be a JSON object" in reasons[""]


async def test_a_decision_after_the_outcome_is_recorded_as_late(env, queue, two_levels) -> None:
    handle = await start(env, queue, policy="two-levels")
    await registered(handle)
    await handle.signal("cancel", {"user": "alice", "reason": "no longer needed"})
    await handle.signal("decide", decision("bob", decision_id="late"))
    result = await handle.result()
    assert (result["outcome"], result["decided_by"], result["comment"]) == ("cancelled", "alice", "no longer needed")
    status = await handle.query("status")
    late = [e for e in status["events"] if e.get("id") == "late"]
    assert late[0]["type"] == "ignored" and late[0]["detail"].startswith("already cancelled by alice")
    assert (await task_row(handle.id)).status == "cancelled"


async def test_the_decide_update_returns_the_outcome_and_its_validator_rejects_bad_calls(
    env, queue, two_levels
) -> None:
    handle = await start(env, queue, policy="two-levels")
    await registered(handle)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update("decide", {"decision": "approve", "user": "bob"})  # no decision_id
    answer = await handle.execute_update("decide", decision("dave"))
    assert answer["applied"] is False and "not assigned" in answer["reason"]
    answer = await handle.execute_update("decide", decision("bob", decision_id="sync"))
    assert answer == {"applied": True, "outcome": "approved", "reason": ""}
    result = await handle.result()
    assert result["decision_id"] == "sync"


async def test_approvers_in_the_input_override_the_first_level(env, queue, two_levels) -> None:
    handle = await start(env, queue, policy="two-levels", approvers={"users": ["dave"]})
    await registered(handle)
    await handle.signal("decide", decision("bob", decision_id="bob"))
    await handle.signal("decide", decision("dave", decision_id="dave"))
    result = await handle.result()
    assert result["decided_by"] == "dave"


async def test_the_default_policy_applies_when_none_is_named(env, queue, cast) -> None:
    handle = await start(env, queue)
    task = await registered(handle)
    assert task.policy_snapshot["slug"] == "standard"
    await handle.signal("decide", decision("bob"))
    assert (await handle.result())["outcome"] == "approved"


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"title": None}, "title"),
        ({"request_id": ""}, "request_id"),
        ({"title": 42}, "title"),
        ({"title": "nul\x00byte"}, "title"),
        ({"payload": {"note": "nul\x00byte"}}, "payload.note"),
        ({"payload": ["not", "an", "object"]}, "payload"),
        ({"policy": "no-such-policy"}, "policy"),
        ({"approvers": {"groups": ["no-such-group"]}}, "approvers.groups"),
        ({"approvers": {"users": "bob"}}, "approvers.users"),
    ],
)
async def test_bad_input_fails_fast_naming_the_field(env, queue, two_levels, request_fields, field) -> None:
    handle = await start(env, queue, **request_fields)
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.non_retryable and cause.type == "InvalidInput"
    assert f"{field}:" in cause.message
    description = await handle.describe()
    assert description.status is not None and description.status.name == "FAILED"
    assert not await sync_to_async(ApprovalTask.objects.filter(workflow_id=handle.id).exists)()


async def test_a_request_made_here_with_a_bad_policy_is_marked_failed(env, queue, cast) -> None:
    @sync_to_async
    def make_row() -> ApprovalTask:
        return ApprovalTask.objects.create(
            workflow_id="approval-bad", request_id="bad", title="Bad", requested_by="alice"
        )

    await make_row()
    handle = await env.client.start_workflow(
        "ApprovalWorkflow", {"request_id": "bad", "title": "Bad", "policy": "gone"}, id="approval-bad", task_queue=queue
    )
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    task = await task_row("approval-bad")
    assert task.status == "failed" and "policy: no escalation policy with slug 'gone'" in task.start_error


async def test_a_temporal_cancellation_closes_the_task(env, queue, two_levels) -> None:
    handle = await start(env, queue, policy="two-levels")
    await registered(handle)
    await handle.cancel()
    # Cancelling needs no skipped time; with time skipping on, the test server once never answered the
    # result of a parent cancelled with children running (300 s, on a loaded machine).
    with env.auto_time_skipping_disabled():
        result = await handle.result()
    assert result["outcome"] == "cancelled"
    assert (await task_row(handle.id)).status == "cancelled"


async def test_a_reused_workflow_id_gets_a_task_of_its_own(env, queue, two_levels) -> None:
    request = {"request_id": "again", "title": "First run", "requested_by": "alice", "policy": "two-levels"}
    first = await env.client.start_workflow("ApprovalWorkflow", request, id="approval-again", task_queue=queue)
    await registered(first)
    await first.signal("decide", decision("bob", decision_id="first"))
    await first.result()
    second = await env.client.start_workflow(
        "ApprovalWorkflow", {**request, "title": "Second run"}, id="approval-again", task_queue=queue
    )
    task = await registered(second)
    assert (task.title, task.status, task.run_id) == ("Second run", "pending", second.result_run_id)

    @sync_to_async
    def archived() -> list[tuple[str, str]]:
        return list(
            ApprovalTask.objects.filter(workflow_id__startswith="approval-again#").values_list("title", "status")
        )

    assert await archived() == [("First run", "approved")]


async def test_a_non_object_input_fails_fast(env, queue, two_levels) -> None:
    handle = await env.client.start_workflow("ApprovalWorkflow", "just a string", id="bad-input", task_queue=queue)
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert "input: must be a JSON object" in str(failure.value.cause)
