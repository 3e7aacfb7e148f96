"""Batch actions from the explorer's query, on a real Temporal dev server of the test's own (Temporal
runs one batch job per namespace at a time, and the counts must be exact): preview, the typed
count, the Temporal batch job, its progress and its one audit row."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from html import unescape
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus

from approvals.models import ApprovalTask
from config.ports import free_port
from monitoring.models import ActionLog

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


# ---- small local helpers -------------------------------------------------------------------


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"still {value!r} after {timeout}s")


def start_runs(address: str, queue: str, tag: str, n: int, workflow: str = "MonMixWorkflow") -> list[str]:
    """``n`` sample workflows that wait an hour (or approvals), ids ``<tag>-<i>``."""

    async def go() -> list[str]:
        client = await TemporalClient.connect(address)
        ids = []
        for i in range(n):
            arg: dict[str, Any] = {"mode": "hang"}
            if workflow == "ApprovalWorkflow":
                arg = {"request_id": f"{tag}-{i}", "title": f"Batch {i}", "requested_by": "alice"}
            handle = await client.start_workflow(workflow, arg, id=f"{tag}-{workflow}-{i}", task_queue=queue)
            ids.append(handle.id)
        return ids

    return asyncio.run(go())


def count(address: str, query: str) -> int:
    async def go() -> int:
        return (await (await TemporalClient.connect(address)).count_workflows(query)).count

    return asyncio.run(go())


def statuses(address: str, ids: list[str]) -> list[WorkflowExecutionStatus | None]:
    async def go() -> list[WorkflowExecutionStatus | None]:
        client = await TemporalClient.connect(address)
        return [(await client.get_workflow_handle(i).describe()).status for i in ids]

    return asyncio.run(go())


def batch_jobs_on_server(address: str) -> int:
    async def go() -> int:
        from temporalio.api.workflowservice.v1 import ListBatchOperationsRequest

        client = await TemporalClient.connect(address)
        listed = await client.workflow_service.list_batch_operations(
            ListBatchOperationsRequest(namespace="default", page_size=50)
        )
        return len(listed.operation_info)

    return asyncio.run(go())


def text(response: Any) -> str:
    """The page's words, tags and blank runs left out."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", "", response.content.decode())))


def run_batch(oscar: Client, form: dict[str, str], expected: int) -> str:
    """Preview, confirm with the count typed in, follow the progress until the job ends; the job id."""
    confirm = oscar.post(reverse("monitoring:batch_run"), form)
    assert confirm.status_code == 200, text(confirm)
    assert f"Type the number of workflows, {expected}, to confirm" in text(confirm)
    started = oscar.post(reverse("monitoring:batch_run"), {**form, "confirm_count": str(expected)})
    assert started.status_code == 302, text(started)
    job_id = started["Location"].rstrip("/").rsplit("/", 1)[-1]
    assert job_id.startswith("tollgate-batch-")

    def finished() -> str:
        page = oscar.get(reverse("monitoring:batch_job", args=[job_id]), HTTP_HX_REQUEST="true")
        assert page.status_code == 200
        body = page.content.decode()
        return body if 'hx-trigger="every 1s"' not in body else ""  # a finished job stops polling

    body = wait_for(finished, timeout=60)
    assert "Completed" in body
    return job_id


# ---- the tests -------------------------------------------------------------------------------


def test_a_batch_cancel_of_50_waiting_workflows_cancels_them_all_and_audits_one_row(
    cast: dict[str, Any], own_server: Any, own_settings: Any, sample_worker: Any
) -> None:
    tag = f"bc{uuid.uuid4().hex[:6]}"
    ids = start_runs(own_server.address, own_settings.TEMPORAL_TASK_QUEUE, tag, 50)
    query = f'WorkflowId STARTS_WITH "{tag}"'
    wait_for(lambda: count(own_server.address, f"{query} AND ExecutionStatus = 'Running'") == 50)
    oscar = login(cast["operator"])

    explorer = oscar.get(reverse("monitoring:executions"), {"q": query})
    link = re.search(r'id="batch-link" href="([^"]+)"', explorer.content.decode())
    assert link, "the explorer offers a batch action on its query"
    preview = oscar.get(unescape(link.group(1)))
    assert preview.status_code == 200
    assert "50 runs match, 50 of them running" in text(preview)
    assert text(preview).count(f"{tag}-MonMixWorkflow-") == 10  # the first rows

    form = {"q": query, "action": "cancel", "reason": "clean up the load test"}
    job_id = run_batch(oscar, form, 50)

    wait_for(lambda: set(statuses(own_server.address, ids)) == {WorkflowExecutionStatus.CANCELED})
    entry = ActionLog.objects.get()
    assert (entry.username, entry.action, entry.workflow_id, entry.reason) == (
        "oscar", "cancel", "", "clean up the load test"
    )  # fmt: skip
    batch = entry.detail["batch"]
    assert (batch["job_id"], batch["count"], batch["query"]) == (job_id, 50, query)
    assert (batch["state"], batch["total"], batch["complete"], batch["failure"]) == ("completed", 50, 50, 0)
    assert entry.ok and entry.message == "Batch job completed: 50 of 50 done, 0 failed."
    jobs = oscar.get(reverse("monitoring:batch_jobs"))
    assert jobs.status_code == 200 and job_id in text(jobs) and "oscar" in text(jobs)


def test_a_batch_terminate_needs_a_reason_and_writes_it_to_each_workflow(
    cast: dict[str, Any], own_server: Any, own_settings: Any, sample_worker: Any
) -> None:
    tag = f"bt{uuid.uuid4().hex[:6]}"
    ids = start_runs(own_server.address, own_settings.TEMPORAL_TASK_QUEUE, tag, 5)
    query = f'WorkflowId STARTS_WITH "{tag}"'
    wait_for(lambda: count(own_server.address, query) == 5)
    oscar = login(cast["operator"])

    no_reason = oscar.post(reverse("monitoring:batch_run"), {"q": query, "action": "terminate"})
    assert no_reason.status_code == 400 and "Reason: a batch terminate needs one" in text(no_reason)

    run_batch(oscar, {"q": query, "action": "terminate", "reason": "runaway deploys"}, 5)
    assert set(statuses(own_server.address, ids)) == {WorkflowExecutionStatus.TERMINATED}

    async def reasons() -> set[str]:
        client = await TemporalClient.connect(own_server.address)
        found = set()
        for workflow_id in ids:
            async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
                    found.add(event.workflow_execution_terminated_event_attributes.reason)
        return found

    assert asyncio.run(reasons()) == {"runaway deploys"}
    entry = ActionLog.objects.get()
    assert (entry.action, entry.detail["batch"]["count"], entry.detail["batch"]["complete"]) == ("terminate", 5, 5)


def test_a_typed_count_that_does_not_match_starts_nothing(
    cast: dict[str, Any], own_server: Any, own_settings: Any, sample_worker: Any
) -> None:
    tag = f"bm{uuid.uuid4().hex[:6]}"
    ids = start_runs(own_server.address, own_settings.TEMPORAL_TASK_QUEUE, tag, 3)
    query = f'WorkflowId STARTS_WITH "{tag}"'
    wait_for(lambda: count(own_server.address, query) == 3)
    oscar = login(cast["operator"])
    form = {"q": query, "action": "terminate", "reason": "oops"}

    for typed in ("4", "", "three", "3; drop"):
        response = oscar.post(reverse("monitoring:batch_run"), {**form, "confirm_count": typed})
        assert response.status_code == 400
        assert "but the batch would act on 3 workflows now; type 3 to go on" in text(response)
    assert ActionLog.objects.count() == 0
    assert batch_jobs_on_server(own_server.address) == 0
    assert set(statuses(own_server.address, ids)) == {WorkflowExecutionStatus.RUNNING}


def test_a_batch_of_an_approvals_human_signal_is_refused_unless_the_query_leaves_approvals_out(
    cast: dict[str, Any], own_server: Any, own_settings: Any, sample_worker: Any
) -> None:
    tag = f"bs{uuid.uuid4().hex[:6]}"
    queue = own_settings.TEMPORAL_TASK_QUEUE
    approvals = start_runs(own_server.address, queue, tag, 1, "ApprovalWorkflow")
    start_runs(own_server.address, queue, tag, 1)
    query = f'WorkflowId STARTS_WITH "{tag}"'
    wait_for(lambda: count(own_server.address, f"{query} AND ExecutionStatus = 'Running'") == 2)
    wait_for(lambda: ApprovalTask.objects.filter(workflow_id=approvals[0], status="pending").exists())
    oscar = login(cast["operator"])

    for signal in ("decide", "update_policy", "cancel"):
        form = {"q": query, "action": "signal", "signal": signal, "input": '{"user": "bob", "decision": "approve"}'}
        refused = oscar.post(reverse("monitoring:batch_run"), {**form, "confirm_count": "2"})
        assert refused.status_code == 403
        assert f"matches 1 running approval, and '{signal}' carries a person's name" in text(refused)
    assert batch_jobs_on_server(own_server.address) == 0
    refusals = ActionLog.objects.filter(detail__refused=True)
    assert sorted(r.detail["signal"] for r in refusals) == ["cancel", "decide", "update_policy"]
    assert all(r.username == "oscar" and not r.ok and r.detail["batch"]["query"] == query for r in refusals)

    # Restricted to another type, the same signal name may go, and the job itself leaves approvals out.
    other = f"{query} AND WorkflowType = 'MonMixWorkflow'"
    allowed = oscar.post(reverse("monitoring:batch_run"), {"q": other, "action": "signal", "signal": "decide"})
    assert allowed.status_code == 200
    assert "Type the number of workflows, 1, to confirm" in text(allowed)
    assert "WorkflowType != 'ApprovalWorkflow'" in text(allowed)
    assert ApprovalTask.objects.get(workflow_id=approvals[0]).status == "pending"


def test_a_batch_cancel_of_approvals_sends_their_cancel_signal_in_the_operators_name(
    cast: dict[str, Any], own_server: Any, own_settings: Any, sample_worker: Any
) -> None:
    tag = f"ba{uuid.uuid4().hex[:6]}"
    queue = own_settings.TEMPORAL_TASK_QUEUE
    approvals = start_runs(own_server.address, queue, tag, 2, "ApprovalWorkflow")
    start_runs(own_server.address, queue, tag, 1)
    query = f'WorkflowId STARTS_WITH "{tag}"'
    wait_for(lambda: count(own_server.address, f"{query} AND ExecutionStatus = 'Running'") == 3)
    wait_for(lambda: ApprovalTask.objects.filter(workflow_id__in=approvals, status="pending").count() == 2)
    oscar = login(cast["operator"])

    mixed = oscar.post(reverse("monitoring:batch_run"), {"q": query, "action": "cancel", "reason": "dup"})
    assert mixed.status_code == 400
    assert "matches 2 running approvals and 1 other running workflows" in text(mixed)
    assert "Cancel the 2 approvals" in text(mixed) and "Cancel the 1 other workflows" in text(mixed)

    only_approvals = f"({query}) AND WorkflowType = 'ApprovalWorkflow'"
    form = {"q": only_approvals, "action": "cancel", "reason": "duplicate requests"}
    assert "each gets its cancel signal naming you" in text(oscar.post(reverse("monitoring:batch_run"), form))
    run_batch(oscar, form, 2)

    wait_for(lambda: ApprovalTask.objects.filter(workflow_id__in=approvals, status="cancelled").count() == 2)
    for task in ApprovalTask.objects.filter(workflow_id__in=approvals):
        assert task.audit.filter(
            kind="cancelled", actor="oscar", message="Cancelled by oscar: duplicate requests"
        ).exists()
    entry = ActionLog.objects.get(detail__batch__job_id__startswith="tollgate-batch-")
    assert entry.detail["signal"] == "cancel"
    assert entry.detail["input"] == {"user": "oscar", "reason": "duplicate requests"}
    assert (
        count(own_server.address, f"{query} AND WorkflowType = 'MonMixWorkflow' AND ExecutionStatus = 'Running'") == 1
    )


def test_bad_queries_no_matches_and_temporal_down_are_said_in_words(
    cast: dict[str, Any], own_server: Any, own_settings: Any, settings: Any
) -> None:
    oscar = login(cast["operator"])
    bad = oscar.get(reverse("monitoring:batch"), {"q": "NoSuchAttribute = 'x'"})
    assert bad.status_code == 400 and "Temporal refused the query" in text(bad)
    posted = oscar.post(reverse("monitoring:batch_run"), {"q": "WorkflowId = ", "action": "terminate", "reason": "x"})
    assert posted.status_code == 400 and "Temporal refused the query" in text(posted)
    none = oscar.get(reverse("monitoring:batch"), {"q": "WorkflowId = 'nothing-here'"})
    assert none.status_code == 200 and "Nothing matches this query" in text(none)
    nothing = oscar.post(reverse("monitoring:batch_run"), {"q": "WorkflowId = 'nothing-here'", "action": "reset",
                                                            "reason": "x", "confirm_count": "0"})  # fmt: skip
    assert nothing.status_code == 400 and "Nothing to do" in text(nothing)
    empty = oscar.get(reverse("monitoring:batch"))
    assert empty.status_code == 400 and "Query: a batch acts on the runs a visibility query matches" in text(empty)
    signal = oscar.post(reverse("monitoring:batch_run"), {"q": "WorkflowId = 'x'", "action": "signal",
                                                           "signal": "poke", "input": "{nope"})  # fmt: skip
    assert signal.status_code == 400 and "Signal input: the" in text(signal)

    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"
    down = oscar.get(reverse("monitoring:batch"), {"q": "WorkflowId = 'x'"})
    assert down.status_code == 503 and "Temporal is unreachable" in text(down)
    down_run = oscar.post(reverse("monitoring:batch_run"), {"q": "WorkflowId = 'x'", "action": "cancel",
                                                             "reason": "x", "confirm_count": "1"})  # fmt: skip
    assert down_run.status_code == 503 and "nothing was sent" in text(down_run)
    job = oscar.get(reverse("monitoring:batch_job", args=["tollgate-batch-x"]))
    assert job.status_code == 503
    assert oscar.get(reverse("monitoring:batch_jobs")).status_code == 200
    assert ActionLog.objects.count() == 0


def test_only_operators_with_the_action_permission_run_batches(cast: dict[str, Any], settings: Any) -> None:
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"  # a refusal must come before any Temporal call
    form = {"q": "WorkflowId = 'x'", "action": "terminate", "reason": "x", "confirm_count": "1"}
    viewer = get_user_model().objects.create_user("vera", password="x")
    viewer.user_permissions.add(Permission.objects.get(codename="view_monitoring"))
    for name in ("bob", "dave", "alice"):
        someone = login(cast[name])
        assert someone.get(reverse("monitoring:batch"), {"q": "WorkflowId = 'x'"}).status_code == 403
        assert someone.post(reverse("monitoring:batch_run"), form).status_code == 403
        assert someone.get(reverse("monitoring:batch_jobs")).status_code == 403
        assert someone.get(reverse("monitoring:batch_job", args=["j"])).status_code == 403
    watcher = login(viewer)  # may watch monitoring, may not act
    assert watcher.get(reverse("monitoring:batch"), {"q": "WorkflowId = 'x'"}).status_code == 403
    assert watcher.post(reverse("monitoring:batch_run"), form).status_code == 403
    assert watcher.get(reverse("monitoring:batch_jobs")).status_code == 200
    anonymous = Client().get(reverse("monitoring:batch"))
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
    assert login(cast["operator"]).get(reverse("monitoring:batch"), {"q": "x"}).status_code == 503
    assert ActionLog.objects.count() == 0
