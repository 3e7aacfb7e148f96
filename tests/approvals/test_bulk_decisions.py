"""Bulk approve/reject: each task through the single decision's path, with one result per task."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalTask, AuditEntry, BulkDecision, Decision, Policy, TaskAssignment
from config.ports import free_port
from tests.support.temporal import eventually
from workflows import client as temporal

pytestmark = pytest.mark.django_db


def make_task(title: str, *, group: str = "approvers", **fields: Any) -> ApprovalTask:
    token = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "workflow_id": f"approval-{token}", "request_id": token, "title": title, "status": "pending",
        "due_at": timezone.now() + timedelta(days=1), "requested_by": "alice", **fields,
    }  # fmt: skip
    task = ApprovalTask.objects.create(**values)
    TaskAssignment.objects.create(task=task, level=1, group=Group.objects.get(name=group))
    return task


def bulk(client: Client, data: dict[str, Any], *, htmx: bool = True) -> Any:
    return client.post(reverse("approvals:bulk"), data, headers={"HX-Request": "true"} if htmx else {})


def results(run_id: str) -> dict[str, tuple[str, str]]:
    run = BulkDecision.objects.get(pk=run_id)
    return {item["title"]: (item["state"], item["message"]) for item in run.results}


@pytest.fixture
def temporal_down(settings: Any) -> Any:
    settings.TEMPORAL_ADDRESS = f"127.0.0.1:{free_port()}"
    return settings


@pytest.fixture
def bob(client: Client, cast: dict[str, Any]) -> Client:
    client.force_login(cast["bob"])
    return client


def test_rejecting_in_bulk_needs_a_reason_shown_where_the_page_shows_results(bob: Client, cast: dict[str, Any]) -> None:
    task = make_task("Laptop")
    response = bulk(bob, {"task": [task.pk], "choice": "reject"})
    assert response.status_code == 422
    assert 'role="alert"' in response.content.decode() and "Rejecting needs a reason." in response.content.decode()
    assert not Decision.objects.exists() and not BulkDecision.objects.exists()


def test_nothing_selected_is_refused_with_a_message(bob: Client, cast: dict[str, Any]) -> None:
    response = bulk(bob, {"task": ["x", "²"], "choice": "approve"})
    assert response.status_code == 422 and "Select at least one pending task." in response.content.decode()
    assert bob.get(reverse("approvals:bulk")).status_code == 405


def test_with_temporal_down_each_task_is_recorded_for_later_delivery(
    bob: Client, cast: dict[str, Any], temporal_down: Any
) -> None:
    tasks = [make_task(f"Task {n}") for n in range(3)]
    run = str(uuid.uuid4())
    began = time.monotonic()
    response = bulk(bob, {"task": [t.pk for t in tasks], "choice": "approve", "comment": "ok", "run": run})
    assert time.monotonic() - began < 8  # one connection attempt for all, not one timeout each
    assert response.status_code == 200
    body = response.content.decode()
    assert body.count("Recorded for later delivery") == 3
    for task in tasks:
        decision = Decision.objects.get(task=task, user=cast["bob"])
        assert (decision.choice, decision.comment, decision.delivered_at) == ("approve", "ok", None)
        assert AuditEntry.objects.filter(task=task, kind="decision").count() == 1  # in the chain, as a single one
    assert set(results(run).values()) == {
        ("recorded", "Your decision is recorded; it will be applied when the workflow engine is back.")
    }
    # The chain still verifies, decisions included.
    call_command("verify_audit")


def test_a_policy_that_forbids_bulk_and_a_decision_by_someone_else_are_reported_per_task(
    bob: Client, cast: dict[str, Any], temporal_down: Any
) -> None:
    sensitive = Policy.objects.get(slug="standard")
    sensitive.no_bulk_decisions = True
    sensitive.save()
    guarded = make_task("Guarded", policy=sensitive)
    taken = make_task("Taken")
    Decision.objects.create(task=taken, user=cast["carol"], choice="approve")  # carol first, being applied
    closed = make_task("Closed", status="approved", decided_by="carol", decided_at=timezone.now())
    hidden = make_task("Not for bob", group="managers")
    mine = make_task("Own request", requester=cast["bob"])
    free = make_task("Free")
    run = str(uuid.uuid4())
    ids = [guarded.pk, taken.pk, closed.pk, hidden.pk, mine.pk, free.pk]
    bulk(bob, {"task": ids, "choice": "approve", "run": run})
    found = results(run)
    assert found["Guarded"] == (
        "refused",
        "Policy “Standard” asks for one decision at a time: open the task to decide it.",
    )
    assert found["Taken"][0] == "lost" and found["Taken"][1].startswith("Already decided by carol at ")
    assert found["Closed"] == ("lost", "Already approved by carol.")
    assert found[f"Task {hidden.pk}"] == ("lost", "Not yours any more: it is not assigned to you.")
    assert "Not for bob" not in found  # its title is not shown to someone it is not assigned to
    assert found["Own request"] == ("refused", "Requesters may not decide their own request.")
    assert found["Free"][0] == "recorded"
    assert list(Decision.objects.filter(user=cast["bob"]).values_list("task__title", flat=True)) == ["Free"]


def test_all_matching_decides_every_pending_task_the_filter_matches_and_no_other(
    bob: Client, cast: dict[str, Any], temporal_down: Any
) -> None:
    for n in range(4):
        make_task(f"Big {n}", payload={"amount": 5000 + n})
    make_task("Small", payload={"amount": 10})
    run = str(uuid.uuid4())
    bulk(bob, {"all": "1", "query": "where=amount+%3E%3D+1000&sort=-title", "choice": "approve", "run": run})
    assert list(results(run)) == ["Big 3", "Big 2", "Big 1", "Big 0"]  # in the inbox's order
    assert not Decision.objects.filter(task__title="Small").exists()


def test_without_htmx_a_bulk_decision_redirects_to_its_results_which_only_its_owner_sees(
    bob: Client, cast: dict[str, Any], temporal_down: Any
) -> None:
    task = make_task("Plain form")
    response = bulk(bob, {"task": [task.pk], "choice": "approve"}, htmx=False)
    run = BulkDecision.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("approvals:bulk_result", args=[run.pk])
    assert "Recorded for later delivery" in bob.get(response["Location"]).content.decode()
    carol = Client()
    carol.force_login(cast["carol"])
    assert carol.get(response["Location"]).status_code == 404
    assert carol.get(reverse("approvals:bulk_progress", args=[run.pk])).content.decode().strip() == "Starting…"
    assert bob.get(reverse("approvals:bulk_progress", args=[run.pk])).content.decode().strip() == "Done…"


def test_the_same_run_submitted_twice_decides_once(bob: Client, cast: dict[str, Any], temporal_down: Any) -> None:
    task = make_task("Double click")
    run = str(uuid.uuid4())
    for _ in range(2):
        assert bulk(bob, {"task": [task.pk], "choice": "approve", "run": run}).status_code == 200
    assert Decision.objects.filter(task=task).count() == 1 and BulkDecision.objects.count() == 1


# ---- with a real Temporal server and worker ------------------------------------------------------------


def start_requests(requests: list[dict[str, Any]]) -> list[str]:
    """Start approval workflows concurrently (the web's own client), as any Temporal client may."""

    async def start_all() -> list[str]:
        ids = [f"approval-{r['request_id']}" for r in requests]
        gate = asyncio.Semaphore(8)  # a shared dev server on a loaded machine

        async def start(workflow_id: str, request: dict[str, Any]) -> None:
            async with gate:
                await temporal.start_approval(workflow_id=workflow_id, request=request)

        await asyncio.gather(*(start(i, r) for i, r in zip(ids, requests, strict=True)))
        return ids

    return temporal.run(start_all)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_bulk_approval_of_200_tasks_answers_within_seconds_each_through_its_workflow(
    cast: dict[str, Any], worker: Any, settings: Any
) -> None:
    settings.TOLLGATE_DECISION_WAIT_SECONDS = 3  # the production default
    quorum = Policy.objects.create(slug="two-of-them", name="Two of them")
    level = quorum.levels.create(order=1, timeout=timedelta(hours=1), required_approvals=2)
    level.groups.set([Group.objects.get(name="approvers")])
    token = uuid.uuid4().hex[:6]
    requests = [{"request_id": f"{token}-{n}", "title": f"Bulk {n}", "requested_by": "alice"} for n in range(199)]
    requests.append({"request_id": f"{token}-q", "title": "Needs two", "requested_by": "alice", "policy": quorum.slug})
    ids = start_requests(requests)
    eventually(
        lambda: ApprovalTask.objects.filter(workflow_id__in=ids, status="pending").count() == len(requests), timeout=120
    )
    bob = Client()
    bob.force_login(cast["bob"])
    run = str(uuid.uuid4())
    tasks = list(ApprovalTask.objects.filter(workflow_id__in=ids).values_list("pk", flat=True))
    began = time.monotonic()
    response = bulk(bob, {"task": tasks, "choice": "approve", "comment": "batch", "run": run})
    took = time.monotonic() - began
    print(f"\nbulk approval of 200 tasks answered in {took:.2f} s")
    assert response.status_code == 200
    found = results(run)
    # Each says what happened within the wait: applied (a vote counted), or delivered and being applied.
    assert found["Needs two"][0] in ("vote", "delivered"), found["Needs two"]
    if found["Needs two"][0] == "vote":
        assert "1 of 2" in found["Needs two"][1]
    states = {state for title, (state, _) in found.items() if title != "Needs two"}
    assert states <= {"applied", "delivered"}, states
    assert "applied" in states
    assert took < 20, f"200 tasks took {took:.1f} s"
    eventually(
        lambda: ApprovalTask.objects.filter(workflow_id__in=ids, status="approved").count() == len(requests) - 1,
        timeout=120,
    )
    assert Decision.objects.filter(user=cast["bob"], result="applied").count() == len(requests)
    vote = Decision.objects.get(user=cast["bob"], task__title="Needs two")
    assert vote.result_reason == "vote counted: 1 of 2 approvals"
    assert ApprovalTask.objects.get(title="Needs two").status == "pending"
