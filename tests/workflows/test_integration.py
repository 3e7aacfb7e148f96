"""End to end on the Temporal dev server: pages, worker, client, outbox; nothing faked."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import uuid
from typing import Any

import pytest
from django.urls import reverse

from approvals.models import ApprovalTask, Decision
from approvals.services import deliver_outbox
from tests.support.data import make_policy, pending_task
from tests.support.temporal import (
    TEMPORAL_CLI,
    DevServer,
    WorkerThread,
    eventually,
    registered_task,
    start_with_cli,
    workflow_result,
)
from tests.support.web import logged_in
from workflows.worker import relay_outbox

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def inbox_of(user: Any) -> str:
    return logged_in(user).get(reverse("approvals:inbox")).content.decode()


def test_a_request_from_the_form_reaches_the_right_inbox(cast: dict[str, Any], worker: WorkerThread) -> None:
    response = logged_in(cast["alice"]).post(
        reverse("approvals:new"), {"title": "Standing desk", "key_1": "amount", "value_1": "640 EUR"}
    )
    assert response.status_code == 302
    task = ApprovalTask.objects.get(title="Standing desk")
    eventually(lambda: "Standing desk" in inbox_of(cast["bob"]))
    assert "Standing desk" not in inbox_of(cast["carol"])
    task.refresh_from_db()
    assert (task.status, task.policy_name, task.requested_by) == ("pending", "Standard", "alice")


def test_a_request_from_a_plain_temporal_client_reaches_the_inbox_and_is_decided_there(
    cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer
) -> None:
    request = {"request_id": uuid.uuid4().hex[:8], "title": "Vendor contract", "requested_by": "procurement-bot",
               "payload": {"vendor": "ACME", "value": 125000}}  # fmt: skip
    workflow_id = start_with_cli(dev_server.address, worker.task_queue, request)
    eventually(lambda: "Vendor contract" in inbox_of(cast["bob"]))
    task = ApprovalTask.objects.get(workflow_id=workflow_id)
    assert task.requester is None and task.payload == {"vendor": "ACME", "value": 125000}
    response = logged_in(cast["bob"]).post(
        reverse("approvals:decide", args=[task.pk]),
        {"choice": "approve", "comment": "ok"},
        headers={"HX-Request": "true"},
    )
    assert '<p class="result result-applied" role="status">Approved.</p>' in response.content.decode()
    result = workflow_result(dev_server.address, workflow_id)
    assert (result["outcome"], result["decided_by"], result["comment"]) == ("approved", "bob", "ok")
    decision = Decision.objects.get(task=task)
    assert (decision.result, str(decision.decision_id)) == ("applied", result["decision_id"])


def test_a_decision_made_while_the_worker_is_stopped_applies_after_it_starts(
    cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer, temporal_settings: Any
) -> None:
    temporal_settings.TOLLGATE_DECISION_WAIT_SECONDS = 1
    request = {"request_id": uuid.uuid4().hex[:8], "title": "Worker outage", "requested_by": "alice"}
    workflow_id = start_with_cli(dev_server.address, worker.task_queue, request)
    task = registered_task(workflow_id)
    worker.stop()
    response = logged_in(cast["bob"]).post(
        reverse("approvals:decide", args=[task.pk]), {"choice": "approve"}, follow=True
    )
    assert "delivered; it will be applied as soon as a worker picks it up" in response.content.decode()
    assert Decision.objects.get(task=task).delivered_at is not None
    worker.start()
    result = workflow_result(dev_server.address, workflow_id)
    assert (result["outcome"], result["decided_by"]) == ("approved", "bob")
    eventually(lambda: ApprovalTask.objects.get(pk=task.pk).status == "approved")


def test_a_decision_made_while_temporal_is_down_is_delivered_when_it_returns(
    cast: dict[str, Any], settings: Any, tmp_path: Any
) -> None:
    server = DevServer(tmp_path)
    server.start()
    settings.TEMPORAL_ADDRESS = server.address
    settings.TEMPORAL_TASK_QUEUE = "approvals-outage"
    worker = WorkerThread(server.address, settings.TEMPORAL_TASK_QUEUE).start()
    try:
        request = {"request_id": uuid.uuid4().hex[:8], "title": "Server outage", "requested_by": "alice"}
        workflow_id = start_with_cli(server.address, settings.TEMPORAL_TASK_QUEUE, request)
        task = registered_task(workflow_id)
        server.stop()
        response = logged_in(cast["bob"]).post(
            reverse("approvals:decide", args=[task.pk]), {"choice": "reject", "comment": "not now"}, follow=True
        )
        assert "recorded; it will be applied when the workflow engine is back" in response.content.decode()
        decision = Decision.objects.get(task=task)
        assert decision.delivered_at is None
        assert deliver_outbox(older_than=_zero()) == (0, 0)  # still down: stays in the outbox

        relay = RelayThread(interval=0.3).start()  # what run_worker runs beside the worker
        try:
            server.start(keep_port=True)  # same port, same SQLite file: the workflow is still there
            eventually(lambda: Decision.objects.get(pk=decision.pk).delivered_at, timeout=30)
        finally:
            relay.stop()
        result = workflow_result(server.address, workflow_id, timeout=60)
        assert (result["outcome"], result["decided_by"], result["comment"]) == ("rejected", "bob", "not now")
        decision.refresh_from_db()
        assert decision.delivered_at is not None and decision.delivery_attempts >= 2
    finally:
        worker.stop()
        server.stop()


def test_of_two_approvers_deciding_at_once_exactly_one_wins(
    cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer
) -> None:
    policy = make_policy("pair", [{"users": ["bob", "carol"], "timeout": _hours(1)}])
    request = {"request_id": uuid.uuid4().hex[:8], "title": "Race", "requested_by": "alice", "policy": policy.slug}
    workflow_id = start_with_cli(dev_server.address, worker.task_queue, request)
    task = registered_task(workflow_id)
    clients = {name: logged_in(cast[name]) for name in ("bob", "carol")}
    barrier = threading.Barrier(2)
    answers: dict[str, str] = {}

    def decide(name: str) -> None:
        barrier.wait()
        response = clients[name].post(
            reverse("approvals:decide", args=[task.pk]), {"choice": "approve"}, headers={"HX-Request": "true"}
        )
        answers[name] = response.content.decode()

    threads = [threading.Thread(target=decide, args=(name,)) for name in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    result = workflow_result(dev_server.address, workflow_id)
    winner = result["decided_by"]
    loser = "carol" if winner == "bob" else "bob"
    assert "Approved." in answers[winner]
    assert f"Already decided by {winner} at" in answers[loser] or f"already approved by {winner}" in answers[loser]
    assert Decision.objects.filter(task=task, result="applied").count() == 1


class RelayThread:
    """``relay_outbox`` (the loop run_worker runs) on its own event loop in a thread."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.started = threading.Event()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        self.started.set()
        await relay_outbox(self.stop_event, interval=self.interval)

    def start(self) -> RelayThread:
        self.thread.start()
        self.started.wait(10)
        return self

    def stop(self) -> None:
        assert self.loop is not None and self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)


def _zero() -> Any:
    from datetime import timedelta

    return timedelta(0)


def _hours(n: int) -> Any:
    from datetime import timedelta

    return timedelta(hours=n)


def test_the_relay_skips_a_decision_temporal_refuses_and_delivers_the_rest(
    cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer
) -> None:

    ghost = pending_task("Ghost", requester=cast["alice"])  # no such workflow on the server
    request = {"request_id": uuid.uuid4().hex[:8], "title": "Real", "requested_by": "alice"}
    workflow_id = start_with_cli(dev_server.address, worker.task_queue, request)
    real = registered_task(workflow_id)
    lost = Decision.objects.create(task=ghost, user=cast["bob"], choice="approve")
    kept = Decision.objects.create(task=real, user=cast["bob"], choice="approve")
    assert deliver_outbox(older_than=_zero()) == (1, 0)
    lost.refresh_from_db()
    kept.refresh_from_db()
    assert lost.delivered_at is None and lost.result == "pending" and "NOT_FOUND" in lost.last_delivery_error
    assert kept.delivered_at is not None
    assert workflow_result(dev_server.address, workflow_id)["decided_by"] == "bob"


def test_a_request_whose_workflow_was_terminated_before_it_registered_is_marked_failed(
    cast: dict[str, Any], temporal_settings: Any, dev_server: DevServer
) -> None:
    response = logged_in(cast["alice"]).post(reverse("approvals:new"), {"title": "Never registered"})
    assert response.status_code == 302
    task = ApprovalTask.objects.get(title="Never registered")  # started, but no worker polls its queue
    subprocess.run(
        [str(TEMPORAL_CLI), "workflow", "terminate", "--address", dev_server.address,
         "--workflow-id", task.workflow_id, "--reason", "test"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    assert deliver_outbox(older_than=_zero()) == (0, 1)
    task.refresh_from_db()
    assert task.status == "failed" and "closed before it registered" in task.start_error


def test_an_admin_pushes_a_new_version_to_a_running_task_from_the_page(
    cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer
) -> None:
    from approvals.policies import save_policy_version

    policy = make_policy("pushable", [{"groups": ["approvers"], "timeout": _hours(24)}])
    request = {"request_id": uuid.uuid4().hex[:8], "title": "Push me", "requested_by": "alice", "policy": "pushable"}
    workflow_id = start_with_cli(dev_server.address, worker.task_queue, request)
    task = registered_task(workflow_id)
    assert task.policy_version == 1
    level = policy.levels.get()
    level.timeout = _hours(48)
    level.save()
    level.users.add(cast["carol"])
    save_policy_version(policy=policy, user=cast["admin"])
    admin = logged_in(cast["admin"])
    response = admin.post(reverse("approvals:policy_push", args=[policy.pk]), {"task": [task.pk]}, follow=True)
    assert "Version 2 sent to 1 running task(s)." in response.content.decode()
    eventually(lambda: ApprovalTask.objects.get(pk=task.pk).policy_version == 2)
    task.refresh_from_db()
    assert task.due_at is not None and task.created_at is not None
    assert abs((task.due_at - task.created_at) - _hours(48)).total_seconds() < 5
    assert task.audit.filter(kind="policy", actor="admin").exists()
    assert "Push me" in inbox_of(cast["carol"])  # the new version's approvers were added


def test_a_quorum_is_reached_by_votes_through_the_page(
    cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer
) -> None:
    make_policy("two-of-three", [{"users": ["bob", "carol", "dave"], "timeout": _hours(24), "required_approvals": 2}])
    request = {"request_id": uuid.uuid4().hex[:8], "title": "Quorum", "requested_by": "alice", "policy": "two-of-three"}
    workflow_id = start_with_cli(dev_server.address, worker.task_queue, request)
    task = registered_task(workflow_id)
    url = reverse("approvals:decide", args=[task.pk])
    first = logged_in(cast["bob"]).post(url, {"choice": "approve"}, headers={"HX-Request": "true"}).content.decode()
    assert "Your vote is counted (1 of 2 approvals)." in first
    assert "1/2 votes" in inbox_of(cast["carol"])
    second = logged_in(cast["carol"]).post(url, {"choice": "approve"}, headers={"HX-Request": "true"})
    assert "Approved." in second.content.decode()
    result = workflow_result(dev_server.address, workflow_id)
    assert (result["outcome"], result["decided_by"]) == ("approved", "carol")
    assert list(Decision.objects.filter(task=task).values_list("result", flat=True).order_by("pk")) == [
        "applied",
        "applied",
    ]


def test_a_task_whose_workflow_is_terminated_in_temporal_is_closed_by_the_next_refresh(
    cast: dict[str, Any], worker: WorkerThread, dev_server: DevServer
) -> None:
    """Terminating runs no workflow code, so nothing closes the task but the monitoring refresh,
    which sees the run close; a run that is only reset (the id goes on) keeps its task."""
    from monitoring.snapshot import refresh_snapshot

    def terminate(workflow_id: str) -> None:
        subprocess.run(
            [str(TEMPORAL_CLI), "workflow", "terminate", "--address", dev_server.address,
             "--workflow-id", workflow_id, "--reason", "operator"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    gone = registered_task(start_with_cli(dev_server.address, worker.task_queue, {"request_id": "t1", "title": "Gone"}))
    kept = registered_task(start_with_cli(dev_server.address, worker.task_queue, {"request_id": "t2", "title": "Kept"}))
    terminate(gone.workflow_id)
    subprocess.run(
        [str(TEMPORAL_CLI), "workflow", "reset", "--address", dev_server.address, "--workflow-id", kept.workflow_id,
         "--type", "FirstWorkflowTask", "--reason", "operator"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip  # the old run is terminated, a new one goes on with the same id
    eventually(lambda: refresh_snapshot() and ApprovalTask.objects.get(pk=gone.pk).status == "cancelled", timeout=20)
    gone.refresh_from_db()
    assert "terminated in Temporal" in gone.comment
    assert gone.audit.filter(kind="cancelled", message__contains="outside Tollgate").exists()
    kept.refresh_from_db()
    assert kept.status == "pending"
    assert "Gone" not in inbox_of(cast["bob"]) and "Kept" in inbox_of(cast["bob"])
