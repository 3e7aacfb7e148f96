"""The reference workflows on the time-skipping test server, with the real activities and ledger."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from approvals.models import ApprovalTask
from monitoring.snapshot import SNAPSHOT_SCHEDULE_ID
from tests.support.data import test_database_url
from tests.support.temporal import (
    DevServer,
    WorkerThread,
    decision,
    eventually,
    pending_child,
    record_history,
    run_async,
    workflow_result,
)
from workflows.models import LedgerEntry
from workflows.reference.saga import LedgerInput, charge_payment, release_hold, reserve_inventory

pytestmark = pytest.mark.django_db(transaction=True)

ITEMS = [{"sku": "desk", "quantity": 2}, {"sku": "lamp", "quantity": 1}]


async def start_order(env: WorkflowEnvironment, queue: str, **fields: Any) -> WorkflowHandle[Any, Any]:
    order = {"order_id": uuid.uuid4().hex[:8], "amount": 250, "items": ITEMS, "customer": "alice", **fields}
    return await env.client.start_workflow(
        "OrderSagaWorkflow", order, id=f"order-{order['order_id']}", task_queue=queue
    )


# An order's ledger after its approval said no or it was cancelled: each reservation undone, in reverse.
RESERVED_THEN_RELEASED = [
    ("reserve:desk", False),
    ("reserve:lamp", False),
    ("release:lamp", True),
    ("release:desk", True),
]


@sync_to_async
def ledger(order_id: str) -> list[tuple[str, bool]]:
    return [(e.action, e.undid) for e in LedgerEntry.objects.filter(order_id=order_id)]


async def approval_registered(env: WorkflowEnvironment, order_id: str) -> WorkflowHandle[Any, Any]:
    """The child ApprovalWorkflow, once its task is in the read model."""
    return await pending_child(env.client, f"approval-order-{order_id}", timeout=10)


async def test_a_small_order_completes_without_approval(env, queue, cast) -> None:
    handle = await start_order(env, queue)
    result = await handle.result()
    order_id = result["order_id"]
    assert (result["status"], result["approval"], result["compensated"]) == ("confirmed", None, [])
    assert result["done"] == ["reserve:desk", "reserve:lamp", "charge", "confirm"]
    assert await ledger(order_id) == [
        ("reserve:desk", False),
        ("reserve:lamp", False),
        ("charge", False),
        ("confirm", False),
    ]
    charge = await sync_to_async(LedgerEntry.objects.get)(order_id=order_id, action="charge")
    assert str(charge.amount) == "250.00"
    assert not await sync_to_async(ApprovalTask.objects.filter(workflow_id=f"approval-order-{order_id}").exists)()


async def test_a_large_order_waits_for_approval_and_completes_once_bob_approves(env, queue, cast) -> None:
    handle = await start_order(env, queue, amount=1500)
    order_id = (await handle.describe()).id.removeprefix("order-")
    child = await approval_registered(env, order_id)
    task = await sync_to_async(ApprovalTask.objects.get)(workflow_id=child.id)
    assert (task.request_id, task.requested_by) == (f"order-{order_id}", "alice")
    assert task.payload["amount"] == 1500
    assert await ledger(order_id) == [("reserve:desk", False), ("reserve:lamp", False)]  # held while waiting
    await child.signal("decide", decision("bob"))
    result = await handle.result()
    assert result["status"] == "confirmed"
    assert (result["approval"]["outcome"], result["approval"]["decided_by"]) == ("approved", "bob")
    assert result["done"] == ["reserve:desk", "reserve:lamp", "charge", "confirm"]


async def test_a_rejected_large_order_releases_its_reservations_in_reverse_order(env, queue, cast) -> None:
    handle = await start_order(env, queue, amount=5000)
    order_id = (await handle.describe()).id.removeprefix("order-")
    child = await approval_registered(env, order_id)
    await child.signal("decide", decision("bob", "reject"))
    result = await handle.result()
    assert (result["status"], result["approval"]["outcome"]) == ("rejected", "rejected")
    assert result["compensated"] == ["release:lamp", "release:desk"]
    assert await ledger(order_id) == RESERVED_THEN_RELEASED
    await record_history(handle, "order-saga-rejected-1")
    await record_history(child, "order-saga-rejected-approval-child-1")


async def test_an_order_s_task_page_links_the_saga_and_shows_what_was_compensated(env, queue, cast) -> None:
    from django.test import Client
    from django.urls import reverse

    handle = await start_order(env, queue, amount=1500)
    order_id = handle.id.removeprefix("order-")
    child = await approval_registered(env, order_id)
    await child.signal("decide", decision("bob", "reject"))
    assert (await handle.result())["status"] == "rejected"
    task = await sync_to_async(ApprovalTask.objects.get)(workflow_id=child.id)
    run_id = (await handle.describe()).run_id
    assert (task.parent_workflow_id, task.parent_run_id, task.parent_workflow_type) == (
        handle.id,
        run_id,
        "OrderSagaWorkflow",
    )

    def page(user: str) -> str:
        client = Client()
        client.force_login(cast[user])
        return client.get(reverse("approvals:detail", args=[task.pk])).content.decode()

    operator, approver = await sync_to_async(page)("oscar"), await sync_to_async(page)("bob")
    assert f"Part of <strong>OrderSagaWorkflow</strong> <code>{handle.id}</code>" in operator
    assert f'href="{reverse("monitoring:execution", args=[handle.id, run_id])}"' in operator
    assert f"/workflows/{handle.id}/{run_id}/history" in operator  # the Temporal UI link
    assert f"Part of <strong>OrderSagaWorkflow</strong> <code>{handle.id}</code>" in approver
    assert "in monitoring" not in approver  # bob may not open monitoring
    ledger_rows = re.findall(r"<tr><td><code>([^<]+)</code></td><td>(\d*)</td>.*?<td>([^<]*)</td></tr>", operator, re.S)
    assert ledger_rows == [
        ("reserve:desk", "2", ""),
        ("reserve:lamp", "1", ""),
        ("release:lamp", "1", "compensated"),
        ("release:desk", "2", "compensated"),
    ]


async def test_an_expired_approval_releases_the_reservations(env, queue, cast) -> None:
    handle = await start_order(env, queue, amount=1000, items=[{"sku": "chair"}])
    result = await handle.result()  # time skips past every level of the default policy
    assert (result["status"], result["compensated"]) == ("expired", ["release:chair"])
    assert await ledger(result["order_id"]) == [("reserve:chair", False), ("release:chair", True)]


async def test_a_declined_payment_refunds_nothing_and_releases_the_inventory(env, queue, cast) -> None:
    handle = await start_order(env, queue, fail_payment=True)
    result = await handle.result()
    order_id = result["order_id"]
    assert result["status"] == "failed"
    assert "payment declined" in result["error"]
    assert result["done"] == ["reserve:desk", "reserve:lamp"]
    assert result["compensated"] == ["refund", "release:lamp", "release:desk"]
    assert await ledger(order_id) == [
        ("reserve:desk", False),
        ("reserve:lamp", False),
        ("refund", False),  # recorded, so a late charge would refuse; nothing was charged to undo
        ("release:lamp", True),
        ("release:desk", True),
    ]


async def test_an_order_cancelled_while_awaiting_approval_releases_its_reservations(env, queue, cast) -> None:
    handle = await start_order(env, queue, amount=2000)
    order_id = (await handle.describe()).id.removeprefix("order-")
    await approval_registered(env, order_id)
    await handle.cancel()  # reaches the child, which closes its task as cancelled
    # Cancelling needs no skipped time; with time skipping on, the test server once never answered the
    # result of a parent cancelled with children running (300 s, on a loaded machine).
    with env.auto_time_skipping_disabled():
        result = await handle.result()
    assert (result["status"], result["approval"]["outcome"]) == ("cancelled", "cancelled")
    assert result["compensated"] == ["release:lamp", "release:desk"]
    assert await ledger(order_id) == RESERVED_THEN_RELEASED


async def test_an_order_cancelled_during_a_step_is_compensated_then_ends_cancelled(env, queue, cast) -> None:
    handle = await start_order(env, queue, hold_confirm=True)
    order_id = handle.id.removeprefix("order-")
    for _ in range(200):
        if ("charge", False) in await ledger(order_id):
            break
        await asyncio.sleep(0.05)
    await handle.cancel()  # the confirmation is held: the saga is waiting on that activity
    # Cancelling needs no skipped time; with time skipping on, the test server once never answered the
    # result of a parent cancelled with children running (300 s, on a loaded machine).
    with env.auto_time_skipping_disabled(), pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    assert await ledger(order_id) == [
        ("reserve:desk", False),
        ("reserve:lamp", False),
        ("charge", False),
        ("refund", True),
        ("release:lamp", True),
        ("release:desk", True),
    ]


async def test_bad_input_fails_at_once_naming_the_field(env, queue, cast) -> None:
    handle = await start_order(env, queue, items=[{"sku": "desk", "quantity": 0}])
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.non_retryable, cause.details) == ("InvalidInput", True, ("items[0].quantity",))


def test_a_retried_charge_does_not_charge_twice(transactional_db) -> None:
    charge = LedgerInput(order_id="o-retry", action="charge", amount=99.5)
    assert charge_payment(charge).applied is True
    assert charge_payment(charge).applied is False  # the retry finds the row
    assert [(e.action, str(e.amount)) for e in LedgerEntry.objects.filter(order_id="o-retry")] == [("charge", "99.50")]


def test_a_step_whose_compensation_already_ran_does_not_apply(transactional_db) -> None:
    from workflows.reference.saga import release_inventory

    release_inventory(LedgerInput(order_id="o-late", action="release:desk", undoes="reserve:desk"))
    assert reserve_inventory(LedgerInput(order_id="o-late", action="reserve:desk", quantity=1)).applied is False
    assert [(e.action, e.undid) for e in LedgerEntry.objects.filter(order_id="o-late")] == [("release:desk", False)]


# ---- on the dev server: a worker dies mid-saga ---------------------------------------


def running_activities(address: str, workflow_id: str) -> list[tuple[str, int]]:
    """(activity type, attempt) of the workflow's activities that a worker is running now."""
    from temporalio.api.enums.v1 import PendingActivityState
    from temporalio.client import Client

    async def describe() -> list[tuple[str, int]]:
        client = await Client.connect(address)
        description = await client.get_workflow_handle(workflow_id).describe()
        return [
            (activity.activity_type.name, activity.attempt)
            for activity in description.raw_description.pending_activities
            if activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        ]

    return run_async(describe)


def activity_attempts(address: str, workflow_id: str) -> dict[str, list[int]]:
    """For each activity type: the attempt numbers that completed, from the history."""
    from temporalio.client import Client

    async def history() -> dict[str, list[int]]:
        client = await Client.connect(address)
        events = (await client.get_workflow_handle(workflow_id).fetch_history()).events
        by_id = {event.event_id: event for event in events}
        attempts: dict[str, list[int]] = {}
        for event in events:
            if event.HasField("activity_task_completed_event_attributes"):
                done = event.activity_task_completed_event_attributes
                scheduled = by_id[done.scheduled_event_id].activity_task_scheduled_event_attributes
                started = by_id[done.started_event_id].activity_task_started_event_attributes
                attempts.setdefault(scheduled.activity_type.name, []).append(started.attempt)
        return attempts

    return run_async(history)


def finish_held_saga_on_a_new_worker(address: str, queue: str, order_id: str) -> None:
    """After the first worker is gone mid-confirmation: the steps before it are in the ledger once; a
    new worker finishes the saga, running again only the step that was under way."""
    workflow_id = f"order-{order_id}"
    assert [e.action for e in LedgerEntry.objects.filter(order_id=order_id)] == [
        "reserve:desk",
        "reserve:lamp",
        "charge",
    ]
    release_hold(order_id=order_id)
    second = WorkerThread(address, queue).start()
    try:
        result = workflow_result(address, workflow_id, timeout=90)
    finally:
        second.stop()
    assert (result["status"], result["compensated"]) == ("confirmed", [])
    assert result["done"] == ["reserve:desk", "reserve:lamp", "charge", "confirm"]
    assert [e.action for e in LedgerEntry.objects.filter(order_id=order_id)] == [
        "reserve:desk", "reserve:lamp", "charge", "hold_released", "confirm",
    ]  # fmt: skip
    # Done steps ran once, on the first worker; only the held one ran again (the attempt that was
    # cut off, then the one that finished), on the second.
    assert activity_attempts(address, workflow_id) == {
        "reserve_inventory": [1, 1],
        "charge_payment": [1],
        "confirm_order": [2],
    }


@pytest.mark.integration
def test_a_saga_resumes_from_its_last_step_after_its_worker_stops(
    cast: dict[str, Any], temporal_settings: Any, dev_server: DevServer
) -> None:
    from temporalio.client import Client

    queue = temporal_settings.TEMPORAL_TASK_QUEUE
    order_id = uuid.uuid4().hex[:8]
    workflow_id = f"order-{order_id}"
    order = {"order_id": order_id, "amount": 80, "items": ITEMS, "customer": "alice", "hold_confirm": True}

    async def start() -> None:
        client = await Client.connect(dev_server.address)
        await client.start_workflow("OrderSagaWorkflow", order, id=workflow_id, task_queue=queue)

    first = WorkerThread(dev_server.address, queue).start()
    try:
        run_async(start)
        eventually(lambda: running_activities(dev_server.address, workflow_id) == [("confirm_order", 1)])
    finally:
        first.stop()  # mid-saga: the confirmation is held, the steps before it are done
    assert not first.thread or not first.thread.is_alive()
    finish_held_saga_on_a_new_worker(dev_server.address, queue, order_id)


@pytest.mark.integration
def test_a_saga_whose_worker_process_is_killed_mid_step_finishes_on_a_new_worker(
    cast: dict[str, Any], temporal_settings: Any, dev_server: DevServer
) -> None:
    """A crash, not a shutdown: the worker process gets SIGKILL while the confirmation runs, so it
    finishes nothing and tells the server nothing. The server notices by the activity's missed
    heartbeats (and the sticky queue's timeout), and a new worker resumes from the last completed
    step: the reservations and the charge are not run again."""
    from temporalio.client import Client

    queue = temporal_settings.TEMPORAL_TASK_QUEUE
    order_id = uuid.uuid4().hex[:8]
    workflow_id = f"order-{order_id}"
    order = {"order_id": order_id, "amount": 80, "items": ITEMS, "customer": "alice", "hold_confirm": True}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DATABASE_URL", "TEMPORAL_"))}
    env.update(
        DATABASE_URL=test_database_url(), TEMPORAL_ADDRESS=dev_server.address, TEMPORAL_TASK_QUEUE=queue,
        DJANGO_SECRET_KEY="saga-crash-test", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    log = tempfile.TemporaryFile()
    crashed = subprocess.Popen(
        [sys.executable, "manage.py", "run_worker"], cwd=Path(__file__).resolve().parents[2], env=env,
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    async def start() -> None:
        client = await Client.connect(dev_server.address)
        await client.start_workflow("OrderSagaWorkflow", order, id=workflow_id, task_queue=queue)

    async def drop_schedule() -> None:  # run_worker created it on this queue; nobody will poll it
        client = await Client.connect(dev_server.address)
        await client.get_schedule_handle(SNAPSHOT_SCHEDULE_ID).delete()

    try:
        run_async(start)
        eventually(lambda: running_activities(dev_server.address, workflow_id) == [("confirm_order", 1)], timeout=60)
        crashed.send_signal(signal.SIGKILL)
        assert crashed.wait(10) == -signal.SIGKILL
    finally:
        crashed.kill()
        run_async(drop_schedule)
    log.seek(0)
    assert b"worker polling task queue" in log.read()  # it was the real worker that died
    finish_held_saga_on_a_new_worker(dev_server.address, queue, order_id)


# ---- TeamBudgetWorkflow: a long-lived entity ------------------------------------------


async def start_budget(env: WorkflowEnvironment, queue: str, **fields: Any) -> WorkflowHandle[Any, Any]:
    budget = {"team": f"team-{uuid.uuid4().hex[:6]}", "balance": 1000, "limit": 200, **fields}
    return await env.client.start_workflow(
        "TeamBudgetWorkflow", budget, id=f"budget-{budget['team']}", task_queue=queue
    )


async def balance_when(handle: WorkflowHandle[Any, Any], check: Any) -> dict[str, Any]:
    balance: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            balance = await handle.query("balance", rpc_timeout=timedelta(seconds=2))
        except RPCError:
            pass  # asked between two runs of a workflow that continued as new
        else:
            if check(balance):
                return balance
        await asyncio.sleep(0.05)
    raise AssertionError(f"balance never matched: {balance}")


def spend(amount: float, by: str = "alice", reason: str = "books", **fields: Any) -> dict[str, Any]:
    return {"amount": amount, "by": by, "reason": reason, **fields}


async def test_small_spends_apply_at_once_and_a_duplicate_or_malformed_one_is_ignored(env, queue, cast) -> None:
    handle = await start_budget(env, queue)
    await handle.signal("spend", spend(120, spend_id="s1"))
    await handle.signal("spend", spend(120, spend_id="s1"))
    await handle.signal("spend", {"amount": -5, "by": "alice"})
    await handle.signal("spend", spend(30, by="carol", reason="coffee"))
    balance = await balance_when(handle, lambda b: len(b["recent"]) == 4)
    assert (balance["balance"], balance["spent"]) == (850, 150)
    assert [(e["type"], e.get("by")) for e in balance["recent"]] == [
        ("spent", "alice"),
        ("ignored", "alice"),
        ("ignored", None),
        ("spent", "carol"),
    ]
    assert balance["recent"][1]["detail"] == "duplicate spend_id"
    assert balance["recent"][2]["detail"] == "malformed spend: amount: must be a positive number, at most 1000000000"


async def test_a_spend_above_the_limit_waits_for_approval_and_one_above_the_balance_is_refused(
    env, queue, cast
) -> None:
    handle = await start_budget(env, queue)
    await handle.signal("spend", spend(500, reason="monitor", spend_id="big"))
    await handle.signal("spend", spend(5000, reason="car", spend_id="huge"))
    balance = await balance_when(handle, lambda b: len(b["recent"]) == 2)
    assert [e["type"] for e in balance["recent"]] == ["awaiting_approval", "refused"]
    assert [s["spend_id"] for s in balance["awaiting_approval"]] == ["big"]
    assert balance["balance"] == 1000
    team = balance["team"]
    child = env.client.get_workflow_handle(f"approval-budget-{team}-big")
    for _ in range(200):
        if await sync_to_async(ApprovalTask.objects.filter(workflow_id=child.id, status="pending").exists)():
            break
        await asyncio.sleep(0.05)
    task = await sync_to_async(ApprovalTask.objects.get)(workflow_id=child.id)
    assert (task.requested_by, task.payload["amount"]) == ("alice", 500)
    await child.signal("decide", decision("bob"))
    balance = await balance_when(handle, lambda b: not b["awaiting_approval"])
    assert (balance["balance"], balance["spent"]) == (500, 500)
    assert (balance["recent"][-1]["type"], balance["recent"][-1]["approved_by"]) == ("spent", "bob")


async def test_a_rejected_spend_leaves_the_balance_alone(env, queue, cast) -> None:
    handle = await start_budget(env, queue)
    await handle.signal("spend", spend(300, spend_id="r1"))
    team = (await balance_when(handle, lambda b: b["awaiting_approval"]))["team"]
    child = env.client.get_workflow_handle(f"approval-budget-{team}-r1")
    for _ in range(200):
        if await sync_to_async(ApprovalTask.objects.filter(workflow_id=child.id, status="pending").exists)():
            break
        await asyncio.sleep(0.05)
    await child.signal("decide", decision("bob", "reject"))
    balance = await balance_when(handle, lambda b: not b["awaiting_approval"])
    assert (balance["balance"], balance["recent"][-1]["detail"]) == (1000, "approval rejected")
    await record_history(handle, "team-budget-rejected-spend-1")


async def test_it_continues_as_new_after_n_spends_carrying_its_state(env, queue, cast) -> None:
    handle = await start_budget(env, queue, max_events=2)
    first_run = (await handle.describe()).run_id
    for number in range(5):
        await handle.signal("spend", spend(10, spend_id=f"s{number}"))
    balance = await balance_when(handle, lambda b: b["spent"] == 50)
    assert (balance["balance"], balance["run"]) == (950, 3)  # two spends per run
    assert (await handle.describe()).run_id != first_run
    await handle.signal("spend", spend(10, spend_id="s0"))  # a duplicate from the first run
    balance = await balance_when(handle, lambda b: b["run"] == 4)
    assert (balance["balance"], balance["spent"]) == (950, 50)
    assert [(e["type"], e["spend_id"]) for e in balance["recent"]] == [
        *[("spent", f"s{number}") for number in range(5)],
        ("ignored", "s0"),
    ]
