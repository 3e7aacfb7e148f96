"""DeploymentPipelineWorkflow on the time-skipping test server, with the real activities,
the real child ApprovalWorkflow and its read model."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from temporalio.api.enums.v1 import EventType, RetryState
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from approvals.models import ApprovalTask
from tests.support.temporal import StartedWorkflows, decision, pending_child
from workflows.reference.pipeline import resumed_progress
from workflows.worker import build_worker

pytestmark = pytest.mark.django_db(transaction=True)

_started = StartedWorkflows(prefix="pipeline-")


@pytest.fixture(autouse=True)
async def _record_histories(request: pytest.FixtureRequest, env: WorkflowEnvironment) -> AsyncIterator[None]:
    """With RECORD_HISTORIES=1, keep each pipeline's history for tests/workflows/test_replay.py."""
    _started.handles.clear()
    yield
    await _started.record(request.node.name)


async def start(env: WorkflowEnvironment, queue: str, **fields: Any) -> WorkflowHandle[Any, Any]:
    deployment = {
        "deployment_id": uuid.uuid4().hex[:8],
        "service": "checkout",
        "version": "1.4.2",
        "requested_by": "alice",
        "rollout_seconds": 1,
        **fields,
    }
    handle = await env.client.start_workflow(
        "DeploymentPipelineWorkflow", deployment, id=f"deploy-{deployment['deployment_id']}", task_queue=queue
    )
    return _started.add(handle)


async def gate(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any]) -> WorkflowHandle[Any, Any]:
    """The pipeline's child ApprovalWorkflow, once its task is pending in the read model."""
    return await pending_child(env.client, f"approval-deploy-{handle.id.removeprefix('deploy-')}")


async def attempts_started(handle: WorkflowHandle[Any, Any]) -> dict[str, list[int]]:
    """For each activity type: the attempt number of every ActivityTaskStarted event.
    (Temporal writes a retried activity's started event only for its last attempt.)"""
    events = (await handle.fetch_history()).events
    scheduled = {
        event.event_id: event.activity_task_scheduled_event_attributes.activity_type.name
        for event in events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    attempts: dict[str, list[int]] = {}
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            attempts.setdefault(scheduled[started.scheduled_event_id], []).append(started.attempt)
    return attempts


def steps(result: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {step["name"]: (step["status"], step["attempts"]) for step in result["steps"]}


async def test_a_flaky_build_is_retried_with_backoff_then_the_approved_pipeline_deploys(env, queue, cast) -> None:
    handle = await start(env, queue, flaky_failures=2)
    child = await gate(env, handle)
    progress = await handle.query("progress")
    assert progress["current"] == "approval"
    assert [(s["name"], s["status"], s["attempts"]) for s in progress["steps"]] == [
        ("build", "done", 3),
        ("verify", "done", 1),
        ("approval", "running", 1),
        ("rollout", "pending", 0),
    ]
    task = await sync_to_async(ApprovalTask.objects.get)(workflow_id=child.id)
    assert (task.title, task.requested_by) == ("Deploy checkout 1.4.2", "alice")
    assert task.payload["artifact"] == "checkout:1.4.2"
    assert task.payload["build_attempts"] == 3

    await child.signal("decide", decision("bob"))
    result = await handle.result()
    assert (result["outcome"], result["approved_by"]) == ("deployed", "bob")
    assert steps(result) == {
        "build": ("done", 3),
        "verify": ("done", 1),
        "approval": ("done", 1),
        "rollout": ("done", 1),
    }
    assert await attempts_started(handle) == {"build_artifact": [3], "verify_artifact": [1], "roll_out": [1]}
    build_scheduled = next(
        e.activity_task_scheduled_event_attributes
        for e in (await handle.fetch_history()).events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    )
    assert (build_scheduled.retry_policy.backoff_coefficient, build_scheduled.retry_policy.maximum_attempts) == (2, 10)


async def test_an_invalid_artifact_fails_the_pipeline_at_once_without_a_retry(env, queue, cast) -> None:
    handle = await start(env, queue, flaky_failures=0, fail_with="InvalidArtifact")
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.non_retryable, cause.details) == ("InvalidArtifact", True, ("verify",))
    assert "on attempt 1: checksum mismatch" in cause.message
    assert await attempts_started(handle) == {"build_artifact": [1], "verify_artifact": [1]}
    failed = next(
        e.activity_task_failed_event_attributes
        for e in (await handle.fetch_history()).events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    )
    assert failed.retry_state == RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE
    assert failed.failure.application_failure_info.type == "InvalidArtifact"
    progress = await handle.query("progress")
    assert [(s["name"], s["status"]) for s in progress["steps"]] == [
        ("build", "done"),
        ("verify", "failed"),
        ("approval", "skipped"),
        ("rollout", "skipped"),
    ]
    assert not await sync_to_async(ApprovalTask.objects.filter(workflow_id__endswith=handle.id).exists)()


async def test_a_rejected_gate_stops_the_pipeline_before_the_rollout(env, queue, cast) -> None:
    handle = await start(env, queue, flaky_failures=0)
    child = await gate(env, handle)
    await child.signal("decide", decision("bob", "reject"))
    result = await handle.result()
    assert (result["outcome"], result["approved_by"], result["approval"]["decided_by"]) == ("rejected", None, "bob")
    assert steps(result)["rollout"] == ("skipped", 0)
    assert "roll_out" not in await attempts_started(handle)


async def test_an_expired_gate_stops_the_pipeline_before_the_rollout(env, queue, cast) -> None:
    handle = await start(env, queue, flaky_failures=0)
    result = await handle.result()  # time skips past every level of the default policy
    assert (result["outcome"], result["approval"]["escalations"]) == ("expired", 1)
    assert steps(result)["rollout"] == ("skipped", 0)
    assert "roll_out" not in await attempts_started(handle)


async def pending_rollout(handle: WorkflowHandle[Any, Any]) -> tuple[int, float]:
    """(attempt, seconds done in the last heartbeat the server recorded) of the pending rollout."""
    description = await handle.describe()
    for activity in description.raw_description.pending_activities:
        if activity.activity_type.name == "roll_out":
            details = await env_converter_decode(activity.heartbeat_details.payloads)
            return activity.attempt, resumed_progress(details)
    return 0, 0.0


async def env_converter_decode(payloads: Any) -> list[Any]:
    from temporalio.converter import DataConverter

    return await DataConverter.default.decode(list(payloads))


async def test_a_rollout_resumes_from_its_last_heartbeat_after_its_worker_stops(env, cast) -> None:
    queue = f"approvals-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(max_workers=4) as executor:
        # No workflow cache on the worker that goes away: the time-skipping server would keep the
        # pipeline's next workflow task on its sticky queue instead of giving it to the next worker.
        async with build_worker(env.client, executor, task_queue=queue, cache_workflows=False):
            handle = await start(env, queue, flaky_failures=0, rollout_seconds=8)
            await (await gate(env, handle)).signal("decide", decision("bob"))
            deadline = time.monotonic() + 30
            while (await pending_rollout(handle))[1] < 2:
                assert time.monotonic() < deadline, "the rollout never heartbeated 2s of progress"
                await asyncio.sleep(0.1)
        # The worker is gone mid-rollout: its attempt failed, the server keeps the progress.
        attempt, recorded = await pending_rollout(handle)
        assert attempt == 2
        assert 2 <= recorded < 8
        async with build_worker(env.client, executor, task_queue=queue):
            result = await asyncio.wait_for(handle.result(), 60)
    assert result["outcome"] == "deployed"
    rollout = next(step for step in result["steps"] if step["name"] == "rollout")
    assert (rollout["status"], rollout["attempts"]) == ("done", 2)
    assert rollout["detail"] == f"resumed from {recorded:g}s of 8s"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"deployment_id": None}, "deployment_id"),
        ({"service": ""}, "service"),
        ({"version": 3}, "version"),
        ({"flaky_failures": -1}, "flaky_failures"),
        ({"flaky_failures": True}, "flaky_failures"),
        ({"fail_with": "Boom"}, "fail_with"),
        ({"rollout_seconds": "5"}, "rollout_seconds"),
        ({"policy": "no-such-policy"}, "policy"),
    ],
)
async def test_bad_input_fails_at_once_naming_the_field(env, queue, cast, fields, field) -> None:
    handle = await start(env, queue, **{"flaky_failures": 0, **fields})
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.non_retryable, cause.details) == ("InvalidInput", True, (field,))
    assert field in cause.message


async def test_a_rollout_without_a_usable_heartbeat_starts_from_zero() -> None:
    assert resumed_progress([]) == 0
    assert resumed_progress(["3"]) == 0
    assert resumed_progress([{"done_seconds": -1}]) == 0
    assert resumed_progress([{"done_seconds": 2.5, "percent": 50}]) == 2.5
