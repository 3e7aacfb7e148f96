"""Stuck means stuck: a failing workflow task, an activity retrying past the threshold, an idle run
nothing can wake, an approval past its final deadline; a run waiting on a timer or a person is
waiting, listed on the pending page, never stuck. All on a real dev server and the real snapshot."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from temporalio.client import Client as TemporalClient

from approvals.models import ApprovalTask
from monitoring.models import Execution
from monitoring.snapshot import refresh_snapshot
from tests.support.sample_workflows import SAMPLE_ACTIVITIES, SAMPLE_WORKFLOWS
from tests.support.waiting_workflows import WAITING_ACTIVITIES, WAITING_WORKFLOWS
from workflows import client as temporal

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


# ---- local helpers -----------------------------------------------------------------------------


def _in_thread(make: Callable[[], Any]) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


@contextmanager
def worker_for(address: str, queue: str) -> Iterator[None]:
    """The app's workflows and activities plus the sample and waiting ones, on a thread of their own."""
    from temporalio.worker import Worker

    from workflows.worker import ACTIVITIES, WORKFLOWS, DjangoConnectionInterceptor

    ready, stop_box, errors = threading.Event(), dict[str, Any](), list[BaseException]()

    async def main() -> None:
        stop = asyncio.Event()
        stop_box["loop"], stop_box["stop"] = asyncio.get_running_loop(), stop
        try:
            client = await TemporalClient.connect(address)
            with ThreadPoolExecutor(max_workers=8) as executor:
                async with Worker(
                    client, task_queue=queue, workflows=[*WORKFLOWS, *SAMPLE_WORKFLOWS, *WAITING_WORKFLOWS],
                    activities=[*ACTIVITIES, *SAMPLE_ACTIVITIES, *WAITING_ACTIVITIES], activity_executor=executor,
                    interceptors=[DjangoConnectionInterceptor()],
                ):  # fmt: skip
                    ready.set()
                    await stop.wait()
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(30) and not errors, errors
    try:
        yield
    finally:
        stop_box["loop"].call_soon_threadsafe(stop_box["stop"].set)
        thread.join(30)


def start(address: str, queue: str, workflow: str, *args: Any) -> str:
    workflow_id = f"{workflow.lower()}-{uuid.uuid4().hex[:8]}"

    async def go() -> None:
        client = await TemporalClient.connect(address)
        await client.start_workflow(workflow, *args, id=workflow_id, task_queue=queue)

    _in_thread(go)
    return workflow_id


def raw_description(address: str, workflow_id: str) -> Any:
    async def go() -> Any:
        client = await TemporalClient.connect(address)
        return (await client.get_workflow_handle(workflow_id).describe()).raw_description

    return _in_thread(go)


def until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"not met within {timeout}s")


def stuck_page(user: Any, **params: Any) -> tuple[dict[str, Any], str]:
    client = Client()
    client.force_login(user)
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
    with worker_for(own_server.address, queue):
        broken = start(own_server.address, queue, "MonBrokenWorkflow")
        until(lambda: raw_description(own_server.address, broken).pending_workflow_task.attempt >= 3)
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
    with worker_for(own_server.address, queue):
        retrying = start(own_server.address, queue, "MonRetryWorkflow", "inventory <down>")
        until(lambda: any(p.attempt >= 3 for p in raw_description(own_server.address, retrying).pending_activities))
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
    with worker_for(own_server.address, queue):
        temporal.run(
            temporal.start_approval, workflow_id=workflow_id,
            request={"request_id": workflow_id, "title": "New laptop", "requested_by": "alice"},
        )  # fmt: skip
        until(lambda: ApprovalTask.objects.filter(workflow_id=workflow_id, status="pending").exists())
        # Until a refresh saw it waiting on its timer (an earlier one may catch it mid-activity).
        until(
            lambda: (
                refresh_snapshot()
                and bool(
                    (Execution.objects.filter(workflow_id=workflow_id).first() or Execution()).waiting.get("timers")
                )
            )
        )
    # Two hours with no event in its history: a person has not decided yet, and its 1-day level runs.
    age_progress(workflow_id, hours=2)
    data, html = stuck_page(cast["oscar"], minutes=1)
    everything = data["executions"] + data["failing_workflow_tasks"] + data["not_described_yet"]
    assert workflow_id not in reasons(everything) and workflow_id not in html
    row = Execution.objects.get(workflow_id=workflow_id)
    assert row.waiting["timers"] and row.waiting["complete"]

    oscar = Client()
    oscar.force_login(cast["oscar"])
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
    due = timezone.localtime(task.due_at).strftime("%H:%M")
    assert why == f"past its final deadline (due {due}) and still open", why


def test_an_idle_run_nothing_can_wake_is_stuck_and_one_waiting_for_a_signal_is_not(
    own_settings: Any, own_server: Any, cast: dict[str, Any]
) -> None:
    queue = own_settings.TEMPORAL_TASK_QUEUE
    with worker_for(own_server.address, queue):
        idle = start(own_server.address, queue, "MonIdleWorkflow")
        inbox = start(own_server.address, queue, "MonInboxWorkflow")
        sleeper = start(own_server.address, queue, "MonMixWorkflow", {"mode": "hang"})
        ids = [idle, inbox, sleeper]
        until(lambda: all(not raw_description(own_server.address, i).HasField("pending_workflow_task") for i in ids))
        until(
            lambda: (
                refresh_snapshot() and Execution.objects.filter(workflow_id__in=ids).exclude(waiting={}).count() == 3
            )
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
