"""ApprovalCampaignWorkflow on the time-skipping test server, with the real ApprovalWorkflow children."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from approvals.models import ApprovalTask
from tests.support.temporal import decision, record_history
from workflows.reference.campaign import shares

pytestmark = pytest.mark.django_db(transaction=True)

PEOPLE = ["ann", "ben", "cat", "dan", "eve", "fay", "gus"]


@pytest.fixture
def people(cast: dict[str, Any]) -> list[str]:
    User = get_user_model()
    for name in PEOPLE:
        User.objects.create_user(name, f"{name}@example.com")
    return PEOPLE


async def start_campaign(env: WorkflowEnvironment, queue: str, **fields: Any) -> WorkflowHandle[Any, Any]:
    campaign = {"campaign_id": uuid.uuid4().hex[:8], "title": "Sign the security policy", "requested_by": "alice"}
    campaign.update(fields)
    return await env.client.start_workflow(
        "ApprovalCampaignWorkflow", campaign, id=f"campaign-{campaign['campaign_id']}", task_queue=queue
    )


async def pending_tasks(campaign_id: str, count: int) -> dict[str, ApprovalTask]:
    """The campaign's approval tasks by approver, once ``count`` of them are pending."""
    tasks: list[ApprovalTask] = []
    query = ApprovalTask.objects.filter(request_id__startswith=f"campaign-{campaign_id}-", status="pending")
    for _ in range(400):
        tasks = await sync_to_async(lambda: list(query.all()))()
        if len(tasks) == count:
            return {task.request_id.removeprefix(f"campaign-{campaign_id}-"): task for task in tasks}
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(tasks)} of {count} tasks registered")


async def children(env: WorkflowEnvironment, workflow_id: str) -> list[tuple[str, str]]:
    """(type, id) of every child workflow a workflow started, from its history."""
    history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    started = []
    for event in history.events:
        if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
            attributes = event.start_child_workflow_execution_initiated_event_attributes
            started.append((attributes.workflow_type.name, attributes.workflow_id))
    return started


def test_shares_are_contiguous_nearly_equal_and_at_most_the_limit() -> None:
    assert shares(list("abcdefg"), 3) == [["a", "b", "c"], ["d", "e"], ["f", "g"]]
    assert [len(share) for share in shares([str(n) for n in range(10)], 3)] == [4, 3, 3]
    assert [len(share) for share in shares([str(n) for n in range(2500)], 1000)] == [834, 833, 833]


async def test_seven_approvers_with_a_limit_of_three_build_a_tree_and_mixed_outcomes_add_up(env, queue, people) -> None:
    handle = await start_campaign(env, queue, approvers=[*people, "ann"], fan_out_limit=3, payload={"doc": "v2"})
    campaign_id = handle.id.removeprefix("campaign-")
    tasks = await pending_tasks(campaign_id, 7)
    assert sorted(tasks) == sorted(people)  # "ann" twice is asked once
    for user in ("ann", "ben", "cat"):
        await env.client.get_workflow_handle(f"approval-campaign-{campaign_id}-{user}").signal("decide", decision(user))
    for user, why in (("dan", "not read yet"), ("eve", "section 4 is wrong")):
        child = env.client.get_workflow_handle(f"approval-campaign-{campaign_id}-{user}")
        await child.signal("decide", decision(user, "reject", why))
    await env.client.get_workflow_handle(f"approval-campaign-{campaign_id}-fay").signal(
        "cancel", {"user": "alice", "reason": "left the company"}
    )
    result = await handle.result()  # gus never answers: time skips past the default policy's levels

    assert (result["status"], result["total"]) == ("completed", 7)
    assert result["counts"] == {"approved": 3, "rejected": 2, "expired": 1, "cancelled": 1, "failed": 0}
    assert sorted((r["user"], r["comment"]) for r in result["rejections"]) == [
        ("dan", "not read yet"),
        ("eve", "section 4 is wrong"),
    ]

    # The tree: the root starts three sub-campaigns, they start the seven approvals; nobody more than three.
    root = await children(env, handle.id)
    assert root == [("ApprovalCampaignWorkflow", f"campaign-{campaign_id}-part-{n}") for n in (1, 2, 3)]
    leaves: list[str] = []
    for _, part in root:
        below = await children(env, part)
        assert 1 <= len(below) <= 3
        assert {kind for kind, _ in below} == {"ApprovalWorkflow"}
        leaves += [workflow_id for _, workflow_id in below]
    assert sorted(leaves) == sorted(f"approval-campaign-{campaign_id}-{user}" for user in people)

    # Each task knows the sub-campaign that asked for it (the task page links there).
    task = await sync_to_async(ApprovalTask.objects.get)(workflow_id=f"approval-campaign-{campaign_id}-ann")
    assert (task.parent_workflow_id, task.parent_workflow_type) == (
        f"campaign-{campaign_id}-part-1",
        "ApprovalCampaignWorkflow",
    )
    assert task.parent_run_id and (task.requested_by, task.payload) == ("alice", {"doc": "v2"})
    await record_history(handle, "campaign-tree-mixed-outcomes-root-1")
    await record_history(env.client.get_workflow_handle(root[0][1]), "campaign-tree-mixed-outcomes-part-1")


async def test_the_progress_query_counts_the_outcomes_so_far(env, queue, people) -> None:
    handle = await start_campaign(env, queue, approvers=people[:3])
    campaign_id = handle.id.removeprefix("campaign-")
    await pending_tasks(campaign_id, 3)
    assert (await handle.query("progress"))["pending"] == 3
    await env.client.get_workflow_handle(f"approval-campaign-{campaign_id}-ben").signal(
        "decide", decision("ben", "reject", "no")
    )
    progress: dict[str, Any] = {}
    for _ in range(200):
        progress = await handle.query("progress")
        if progress["finished"]:
            break
        await asyncio.sleep(0.05)
    assert (progress["counts"]["rejected"], progress["finished"], progress["pending"]) == (1, 1, 2)
    assert progress["rejections"] == [
        {"user": "ben", "comment": "no", "decided_at": progress["rejections"][0]["decided_at"]}
    ]


async def test_cancelling_the_campaign_cancels_every_approval_down_the_tree(env, queue, people) -> None:
    handle = await start_campaign(env, queue, approvers=people[:4], fan_out_limit=3)
    campaign_id = handle.id.removeprefix("campaign-")
    await pending_tasks(campaign_id, 4)
    await handle.cancel()
    # Cancelling needs no skipped time; with time skipping on, the test server once never answered the
    # result of a parent cancelled with children running (300 s, on a loaded machine).
    with env.auto_time_skipping_disabled():
        result = await handle.result()
    assert (result["status"], result["counts"]["cancelled"], result["total"]) == ("cancelled", 4, 4)
    rows = ApprovalTask.objects.filter(request_id__startswith=f"campaign-{campaign_id}-")
    statuses = await sync_to_async(lambda: list(rows.values_list("status", flat=True)))()
    assert statuses == ["cancelled"] * 4  # no inbox keeps them


async def test_an_unknown_approver_is_counted_as_failed_with_the_reason(env, queue, people) -> None:
    handle = await start_campaign(env, queue, approvers=["ann", "nobody-here"])
    campaign_id = handle.id.removeprefix("campaign-")
    tasks = await pending_tasks(campaign_id, 1)
    await env.client.get_workflow_handle(tasks["ann"].workflow_id).signal("decide", decision("ann"))
    result = await handle.result()
    assert result["counts"] == {"approved": 1, "rejected": 0, "expired": 0, "cancelled": 0, "failed": 1}
    assert result["failures"][0]["user"] == "nobody-here"
    assert "unknown or inactive user(s): nobody-here" in result["failures"][0]["error"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"campaign_id": None}, "campaign_id"),
        ({"title": ""}, "title"),
        ({"approvers": []}, "approvers"),
        ({"approvers": ["ann", 7]}, "approvers[1]"),
        ({"approvers": ["ann", "alice"]}, "approvers"),  # the requester
        ({"fan_out_limit": 1}, "fan_out_limit"),
        ({"fan_out_limit": 1001}, "fan_out_limit"),
        ({"payload": ["not", "an", "object"]}, "payload"),
        ({"payload": {"blob": "x" * 5000}}, "payload"),
    ],
)
async def test_bad_input_fails_at_once_naming_the_field(env, queue, cast, fields, field) -> None:
    handle = await start_campaign(env, queue, **{"approvers": ["ann", "ben"], **fields})
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.non_retryable, cause.details) == ("InvalidInput", True, (field,))
    assert await children(env, handle.id) == []
