"""Escalation policy shapes on the time-skipping server: levels, quorum, pushes, delegates, routing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from approvals import policies, services
from approvals.models import AuditEntry, Delegation, Notification, Policy, RoutingRule
from tests.support.data import make_policy
from tests.support.temporal import decision, registered, task_row

pytestmark = pytest.mark.django_db(transaction=True)


async def start(env: Any, queue: str, **fields: Any) -> Any:
    request = {"request_id": uuid.uuid4().hex[:8], "title": "Budget", "requested_by": "alice", **fields}
    return await env.client.start_workflow(
        "ApprovalWorkflow", request, id=f"approval-{request['request_id']}", task_queue=queue
    )


@sync_to_async
def audit_kinds(workflow_id: str) -> list[str]:
    return list(AuditEntry.objects.filter(task__workflow_id=workflow_id).values_list("kind", flat=True))


async def test_three_levels_with_reminders_escalate_twice_then_expire(env, queue, cast) -> None:
    await sync_to_async(make_policy)(
        "three",
        [
            {"groups": ["approvers"], "timeout": timedelta(hours=4), "reminder": timedelta(hours=1)},
            {"groups": ["managers"], "timeout": timedelta(hours=8), "reminder": timedelta(hours=3)},
            {"users": ["admin"], "timeout": timedelta(days=1)},
        ],
    )
    handle = await start(env, queue, policy="three")
    result = await handle.result()
    assert (result["outcome"], result["level"], result["escalations"]) == ("expired", 3, 2)
    reminders = await sync_to_async(
        lambda: sorted(
            int(n.event_key.split(":")[2])
            for n in Notification.objects.filter(task__workflow_id=handle.id, kind="reminder")
        )
    )()
    assert reminders == [1, 1, 1, 2, 2]  # hours 1, 2, 3 of level 1; hours 3 and 6 of level 2
    task = await task_row(handle.id)
    assert task.decided_at is not None and task.decided_at - task.created_at >= timedelta(hours=36)


async def test_two_of_three_with_a_veto_rejection(env, queue, cast) -> None:
    await sync_to_async(make_policy)(
        "quorum-veto", [{"users": ["bob", "carol", "dave"], "timeout": timedelta(days=1), "required_approvals": 2}]
    )
    handle = await start(env, queue, policy="quorum-veto")
    await registered(handle)
    await handle.signal("decide", decision("bob"))
    await _until_votes(handle, 1)
    await handle.signal("decide", decision("carol", "reject", "no"))
    result = await handle.result()
    assert (result["outcome"], result["decided_by"], result["comment"]) == ("rejected", "carol", "no")


async def test_two_of_three_where_a_rejection_is_one_vote(env, queue, cast) -> None:
    policy = await sync_to_async(make_policy)(
        "quorum-votes", [{"users": ["bob", "carol", "dave"], "timeout": timedelta(days=1), "required_approvals": 2}]
    )
    await sync_to_async(Policy.objects.filter(pk=policy.pk).update)(rejection_is_veto=False)
    handle = await start(env, queue, policy="quorum-votes")
    await registered(handle)
    await handle.signal("decide", decision("bob", comment="fine"))
    await _until_votes(handle, 1)
    task = await task_row(handle.id)
    assert (task.status, task.approvals, task.required_approvals) == ("pending", 1, 2)
    await handle.signal("decide", decision("carol", "reject", "too much"))
    await _until_votes(handle, 2)
    await handle.signal("decide", decision("bob", decision_id="bob-again"))  # one vote per person
    for _ in range(200):  # let it settle, or dave's vote may close the task first
        if any(e.get("id") == "bob-again" for e in (await handle.query("status"))["events"]):
            break
        await asyncio.sleep(0.05)
    await handle.signal("decide", decision("dave", comment="ok"))
    result = await handle.result()
    assert (result["outcome"], result["decided_by"]) == ("approved", "dave")
    status = await handle.query("status")
    assert [(v["user"], v["decision"]) for v in status["votes"]] == [
        ("bob", "approve"),
        ("carol", "reject"),
        ("dave", "approve"),
    ]
    assert any(e["detail"] == "bob has already voted" for e in status["events"] if e["type"] == "ignored")
    assert (await audit_kinds(handle.id)).count("vote") == 2


async def test_a_version_pushed_mid_level_recomputes_the_deadline_from_the_start(env, queue, cast) -> None:
    policy = await sync_to_async(make_policy)(
        "pushed",
        [
            {"groups": ["approvers"], "timeout": timedelta(days=1)},
            {"groups": ["managers"], "timeout": timedelta(days=1)},
        ],
    )
    handle = await start(env, queue, policy="pushed")
    task = await registered(handle)
    assert task.policy_version == 1

    @sync_to_async
    def new_version() -> dict[str, Any]:
        level = policy.levels.get(order=1)
        level.timeout = timedelta(hours=2)
        level.save()
        version = policies.save_policy_version(policy=policy, user=User.objects.get(username="admin"))
        assert version.changes == ["Level 1 timeout: 1d → 2h"]
        return services.push_payload(version=version, user=User.objects.get(username="admin"))

    await env.sleep(timedelta(hours=1))
    await handle.signal("update_policy", await new_version())
    await env.sleep(timedelta(minutes=61))  # 2h 1m after the start: past the new deadline, far from the old
    status = await handle.query("status")
    assert status["level"] == 2 and status["policy_version"] == 2
    assert [e["type"] for e in status["events"]].index("policy_changed") < [e["type"] for e in status["events"]].index(
        "escalated"
    )
    task = await task_row(handle.id)
    assert (task.level, task.policy_version) == (2, 2)
    assert "policy" in await audit_kinds(handle.id)
    await handle.signal("decide", decision("carol"))
    assert (await handle.result())["decided_by"] == "carol"


async def test_a_push_whose_deadline_has_passed_escalates_once_and_gives_the_next_level_its_time(
    env, queue, cast
) -> None:
    policy = await sync_to_async(make_policy)(
        "late-push",
        [
            {"groups": ["approvers"], "timeout": timedelta(days=1)},
            {"groups": ["managers"], "timeout": timedelta(days=1)},
        ],
        final_action="approve",
    )
    handle = await start(env, queue, policy="late-push")
    await registered(handle)
    await env.sleep(timedelta(hours=25))  # level 2 now, due at 48h

    @sync_to_async
    def shorter() -> dict[str, Any]:
        for level in policy.levels.all():
            level.timeout = timedelta(hours=1)
            level.save()
        admin = User.objects.get(username="admin")
        return services.push_payload(version=policies.save_policy_version(policy=policy, user=admin), user=admin)

    await handle.signal("update_policy", await shorter())
    await env.sleep(timedelta(minutes=30))
    status = await handle.query("status")
    assert status["result"] is None, "a push must not run through to the final action"
    assert status["level"] == 2
    await env.sleep(timedelta(minutes=31))  # level 2's full hour from the push has passed
    result = await handle.result()
    assert (result["outcome"], result["decided_by"]) == ("approved", None)


async def test_a_delegate_is_assigned_while_the_approver_is_out_of_office(env, queue, two_levels) -> None:
    @sync_to_async
    def away() -> None:
        Delegation.objects.create(
            user=cast_user("bob"), delegate=cast_user("dave"), starts_on=date.today() - timedelta(days=1),
            ends_on=date.today() + timedelta(days=7), reason="holiday",
        )  # fmt: skip

    await away()
    handle = await start(env, queue, policy="two-levels")
    task = await registered(handle)
    labels = await sync_to_async(lambda: [a.label for a in task.assignments.all()])()
    assert labels == ["group approvers", "dave (delegate of bob)"]
    await handle.signal("decide", decision("dave", comment="covering for bob"))
    result = await handle.result()
    assert (result["outcome"], result["decided_by"]) == ("approved", "dave")
    assert "delegated" in await audit_kinds(handle.id)


async def test_routing_rules_pick_the_policy_and_an_explicit_policy_wins(env, queue, two_levels) -> None:
    @sync_to_async
    def rules() -> None:
        large = make_policy("large", [{"groups": ["managers"], "timeout": timedelta(days=2)}])
        RoutingRule.objects.create(order=1, request_type="purchase", field="amount", operator=">=", value="10000",
                                   policy=large)  # fmt: skip

    await rules()
    big = await start(env, queue, request_type="purchase", payload={"amount": "12,500"})
    small = await start(env, queue, request_type="purchase", payload={"amount": 500})
    named = await start(env, queue, request_type="purchase", payload={"amount": 50000}, policy="two-levels")
    assert (await registered(big)).policy_snapshot["slug"] == "large"
    assert (await registered(small)).policy_snapshot["slug"] == "standard"
    assert (await registered(named)).policy_snapshot["slug"] == "two-levels"


def cast_user(name: str) -> User:
    return User.objects.get(username=name)


async def _until_votes(handle: Any, count: int) -> None:
    import asyncio

    for _ in range(200):
        if len((await handle.query("status"))["votes"]) >= count:
            await asyncio.sleep(0.2)  # let record_vote reach the database
            return
        await asyncio.sleep(0.05)
    raise AssertionError("votes not recorded")
