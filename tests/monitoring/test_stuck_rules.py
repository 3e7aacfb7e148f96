"""Stuck means stuck: a failing workflow task, an activity retrying past the threshold, an idle run
nothing can wake, an approval past its final deadline; a run waiting on a timer or a person is
waiting, listed on the pending page, never stuck. All on a real dev server and the real snapshot."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalTask
from monitoring.models import Execution
from monitoring.snapshot import refresh_snapshot
from tests.support.temporal import SampleWorker, describe, eventually, start
from tests.support.web import logged_in
from workflows import client as temporal

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


# ---- local helpers -----------------------------------------------------------------------------


def stuck_page(user: Any, **params: Any) -> tuple[dict[str, Any], str]:
    client = logged_in(user)
    data = client.get(reverse("monitoring:stuck"), {"format": "json", **params}).json()
    html = client.get(reverse("monitoring:stuck"), params).content.decode()
    return data, html


def reasons(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {row["workflow_id"]: row["reason"] for row in rows}


def age_progress(workflow_id: str, hours: float) -> None:
    """Time passing without the run's history growing, as the snapshot would see it after `hours`."""
    Execution.objects.filter(workflow_id=workflow_id).update(progress_at=timezone.now() - timedelta(hours=hours))


# ---- the rules -----------------------------------------------------------------------------------


def test_a_workflow_task_failing_again_and_again_is_stuck_with_its_last_error(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    queue = own_settings.TEMPORAL_TASK_QUEUE
    with SampleWorker(own_server.address, queue):
        broken = start(own_server.address, queue, "MonBrokenWorkflow")
        eventually(
            lambda: describe(own_server.address, broken).raw_description.pending_workflow_task.attempt >= 3, timeout=30
        )
        refresh_snapshot()
    data, html = stuck_page(cast["oscar"])
    why = reasons(data["failing_workflow_tasks"])[broken]
    assert (
        why.startswith("workflow task failing: ") and " attempts, last: RuntimeError: a bug in the workflow code" in why
    )
    assert broken not in reasons(data["executions"])  # listed once, under its own heading
    assert "RuntimeError: a bug in the workflow code" in html.split('id="failing"')[1]


def test_an_activity_retrying_past_the_threshold_is_stuck_and_below_it_is_not(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    queue = own_settings.TEMPORAL_TASK_QUEUE
    with SampleWorker(own_server.address, queue):
        retrying = start(own_server.address, queue, "MonRetryWorkflow", "inventory <down>")
        eventually(
            lambda: any(
                p.attempt >= 3 for p in describe(own_server.address, retrying).raw_description.pending_activities
            ),
            timeout=30,
        )
        refresh_snapshot()
    own_settings.MONITORING_STUCK_ATTEMPTS = 3
    data, html = stuck_page(cast["oscar"])
    why = reasons(data["executions"])[retrying]
    assert why.startswith("activity mon_always_fails retrying: attempt ")
    assert "last failure: inventory <down>" in why and "next retry at " in why
    assert "last failure: inventory &lt;down&gt;" in html.split('id="stuck"')[1]
    own_settings.MONITORING_STUCK_ATTEMPTS = 1000
    assert retrying not in reasons(stuck_page(cast["oscar"])[0]["executions"])


def test_an_approval_waiting_for_a_person_is_waiting_until_its_final_deadline_passes(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    queue = own_settings.TEMPORAL_TASK_QUEUE
    workflow_id = f"approval-{uuid.uuid4().hex[:8]}"
    with SampleWorker(own_server.address, queue):
        temporal.run(
            temporal.start_approval, workflow_id=workflow_id,
            request={"request_id": workflow_id, "title": "New laptop", "requested_by": "alice"},
        )  # fmt: skip
        eventually(lambda: ApprovalTask.objects.filter(workflow_id=workflow_id, status="pending").exists(), timeout=30)
        # Until a refresh saw it waiting on its timer (an earlier one may catch it mid-activity).
        eventually(
            lambda: (
                refresh_snapshot()
                and bool(
                    (Execution.objects.filter(workflow_id=workflow_id).first() or Execution()).waiting.get("timers")
                )
            ),
            timeout=30,
        )
    # Two hours with no event in its history: a person has not decided yet, and its 1-day level runs.
    age_progress(workflow_id, hours=2)
    data, html = stuck_page(cast["oscar"], minutes=1)
    everything = data["executions"] + data["failing_workflow_tasks"] + data["not_described_yet"]
    assert workflow_id not in reasons(everything) and workflow_id not in html
    row = Execution.objects.get(workflow_id=workflow_id)
    assert row.waiting["timers"] and row.waiting["complete"]

    oscar = logged_in(cast["oscar"])
    pending = oscar.get(reverse("monitoring:pending"), {"format": "json"}).json()
    waiting = {r["workflow_type"]: r for r in pending["waiting"]}["ApprovalWorkflow"]
    assert waiting["timer"] == 1 and waiting["next_timer_at"] is not None
    assert "ApprovalWorkflow" in oscar.get(reverse("monitoring:pending")).content.decode().split('id="waiting"')[1]

    # Its first level's deadline passing is an escalation, not a stuck approval...
    task = ApprovalTask.objects.get(workflow_id=workflow_id)
    task.due_at = timezone.now() - timedelta(hours=1)
    task.save(update_fields=["due_at"])
    assert workflow_id not in reasons(stuck_page(cast["oscar"])[0]["executions"])
    # ...but open an hour past the final level's deadline, it is stuck: the workflow should have ended it.
    task.level = len(task.policy_snapshot["levels"])
    task.save(update_fields=["level"])
    why = reasons(stuck_page(cast["oscar"])[0]["executions"])[workflow_id]
    due = timezone.localtime(task.due_at).strftime("%H:%M")  # with the date before it when not today
    assert why.startswith("past its final deadline (due ") and why.endswith(f"{due}) and still open"), why


def test_an_idle_run_nothing_can_wake_is_stuck_and_one_waiting_for_a_signal_is_not(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    queue = own_settings.TEMPORAL_TASK_QUEUE
    with SampleWorker(own_server.address, queue):
        idle = start(own_server.address, queue, "MonIdleWorkflow")
        inbox = start(own_server.address, queue, "MonInboxWorkflow")
        sleeper = start(own_server.address, queue, "MonMixWorkflow", {"mode": "hang"})
        ids = [idle, inbox, sleeper]
        eventually(
            lambda: all(
                not describe(own_server.address, i).raw_description.HasField("pending_workflow_task") for i in ids
            ),
            timeout=30,
        )
        eventually(
            lambda: (
                refresh_snapshot() and Execution.objects.filter(workflow_id__in=ids).exclude(waiting={}).count() == 3
            ),
            timeout=30,
        )
    for workflow_id in ids:
        age_progress(workflow_id, hours=3)
    data, _ = stuck_page(cast["oscar"], minutes=30)
    why = reasons(data["executions"])
    assert why[idle] == "no timer, activity or child pending and no progress for 3 h"
    assert inbox not in why and sleeper not in why
    assert Execution.objects.get(workflow_id=inbox).waiting["handlers"]["signals"] == ["poke"]
    # Below the threshold the idle run is not stuck yet.
    assert idle not in reasons(stuck_page(cast["oscar"], minutes=4 * 60)[0]["executions"])
